"""The secret-questions decider as given / when / then tables (SPEC R-INI-1, R-RBA-1, R-RBA-2).

Every rule of step 3 of the smartphone guide appears here with its Japanese message: exactly 3
distinct catalogue questions, answers of 1–10 full-width characters (half-width refused with a
message saying so; emoji and control characters refused), 「確認しました。」 ticked, the step
not repeatable; answers compared exactly; consecutive wrong answers lock.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from contracts.errors import Conflict, Locked, NotFound, ValidationFailed
from contracts.events import NewEvent
from identity import secret_questions_domain as d

CN = "0123456789"
NOW = datetime(2025, 1, 5, 9, 0, tzinfo=timezone.utc)
V = {"q01": "$argon2id$v1", "q03": "$argon2id$v3", "q05": "$argon2id$v5"}


# -- given: events -----------------------------------------------------------------------------

def registered(qids=("q01", "q03", "q05")):
    return NewEvent("secret_questions_registered", {
        "customer_number": CN, "question_ids": list(qids),
        "answer_verifiers": {q: V.get(q, "$argon2id$x") for q in qids}, "confirmed": True})


def failed(n, qid="q01"):
    return NewEvent("secret_answer_failed",
                    {"customer_number": CN, "question_id": qid, "consecutive_failures": n})


def verified(qid="q01"):
    return NewEvent("secret_answer_verified", {"customer_number": CN, "question_id": qid})


def locked(n=5, at=NOW):
    return NewEvent("secret_answers_locked", {"customer_number": CN, "consecutive_failures": n,
                                              "threshold": 5, "locked_at": at.isoformat()})


def unlocked(release="operator"):
    return NewEvent("secret_answers_unlocked", {"customer_number": CN, "release": release})


def reset():
    return NewEvent("secret_questions_reset", {"customer_number": CN})


# -- when: commands ----------------------------------------------------------------------------

def register(answers=(("q01", "やまだ"), ("q03", "東小学校"), ("q05", "青森")), confirmed=True,
             verifiers="auto"):
    ans = tuple(d.Answer(q, a) for q, a in answers)
    if verifiers == "auto":
        verifiers = {q: V.get(q, "$argon2id$x") for q, _ in answers}
    return d.RegisterSecretQuestions(CN, ans, confirmed, verifiers)


def answer(qid="q01", matched=True, now=NOW, threshold=5, release_after=None):
    return d.VerifySecretAnswer(CN, qid, matched, now, threshold, release_after)


def shape(events):
    return [(e.type, e.data) for e in events]


def at(errors, path):
    """errors["answers"]["0"]["answer"] as at(errors, "answers.0.answer")."""
    for key in path.split("."):
        errors = errors[key]
    return errors


def given_when(given, when):
    return d.decide(when, d.fold(given))


# -- then: registration (R-INI-1) --------------------------------------------------------------

REGISTER_OK = [
    ("three distinct questions, kana/kanji answers", register(),
     [("secret_questions_registered", {"customer_number": CN, "question_ids": ["q01", "q03", "q05"],
                                       "answer_verifiers": {"q01": V["q01"], "q03": V["q03"], "q05": V["q05"]},
                                       "confirmed": True})]),
]

FULL_WIDTH_ACCEPTED = [
    "やまだ", "ヤマダ", "山田", "ＡＢＣ１２３", "ａｂｃ", "山田　花子", "あいうえおかきくけこ",   # exactly 10
    "𠮷野", "髙橋", "山﨑", "○×", "※印", "①②", "αβ", "ー〜～", "「青森」", "！？", "々〆",
]


@pytest.mark.parametrize("text", FULL_WIDTH_ACCEPTED)
def test_r_ini_1_full_width_answers_are_accepted(text):
    events = given_when([], register(answers=(("q01", text), ("q03", "東"), ("q05", "西"))))
    assert events[0].type == "secret_questions_registered"


@pytest.mark.parametrize("name,when,then", REGISTER_OK, ids=[c[0] for c in REGISTER_OK])
def test_r_ini_1_registration(name, when, then):
    assert shape(given_when([], when)) == then


_A = (("q01", "やまだ"), ("q03", "東小学校"), ("q05", "青森"))

# (name, given, when, error class, code, the customer's Japanese message, error field)
REGISTER_REFUSED = [
    ("already registered: a step is never repeated", [registered()], register(),
     Conflict, "secret_questions_already_registered", "秘密の質問は既に登録されています。", None),
    ("already registered, even with other answers", [registered()],
     register(answers=(("q02", "あ"), ("q04", "い"), ("q06", "う"))),
     Conflict, "secret_questions_already_registered", "秘密の質問は既に登録されています。", None),
    ("only two questions", [], register(answers=_A[:2]),
     ValidationFailed, "secret_questions_count",
     "秘密の質問は3つ選択し、それぞれに回答を入力してください。", "answers"),
    ("four questions", [], register(answers=_A + (("q07", "くるま"),)),
     ValidationFailed, "secret_questions_count",
     "秘密の質問は3つ選択し、それぞれに回答を入力してください。", "answers"),
    ("no questions", [], register(answers=()),
     ValidationFailed, "secret_questions_count",
     "秘密の質問は3つ選択し、それぞれに回答を入力してください。", "answers"),
    ("question not in the catalogue", [], register(answers=(("q01", "あ"), ("q99", "い"), ("q05", "う"))),
     ValidationFailed, "secret_question_unknown",
     "選択された秘密の質問が正しくありません。一覧から選択してください。", "answers.1.question_id"),
    ("SQL-ish question id", [], register(answers=(("q01'; DROP TABLE x;--", "あ"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_question_unknown",
     "選択された秘密の質問が正しくありません。一覧から選択してください。", "answers.0.question_id"),
    ("the same question twice", [], register(answers=(("q01", "あ"), ("q01", "い"), ("q05", "う"))),
     ValidationFailed, "secret_questions_not_distinct",
     "秘密の質問はそれぞれ異なるものを3つ選択してください。", "answers"),
    ("empty answer", [], register(answers=(("q01", "あ"), ("q03", ""), ("q05", "う"))),
     ValidationFailed, "secret_answer_required", "回答2を入力してください。", "answers.1.answer"),
    ("answer of full-width spaces only", [], register(answers=(("q01", "\u3000\u3000"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_required", "回答1を入力してください。", "answers.0.answer"),
    ("11 full-width characters", [], register(answers=(("q01", "あ"), ("q03", "い"), ("q05", "あいうえおかきくけこさ"))),
     ValidationFailed, "secret_answer_too_long", "回答3は全角10文字以内で入力してください。", "answers.2.answer"),
    ("half-width latin", [], register(answers=(("q01", "yamada"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答1は全角文字で入力してください。半角文字は使用できません。", "answers.0.answer"),
    ("half-width digits", [], register(answers=(("q01", "あ"), ("q03", "123"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答2は全角文字で入力してください。半角文字は使用できません。", "answers.1.answer"),
    ("half-width katakana", [], register(answers=(("q01", "ﾔﾏﾀﾞ"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答1は全角文字で入力してください。半角文字は使用できません。", "answers.0.answer"),
    ("half-width space inside", [], register(answers=(("q01", "山田 花子"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答1は全角文字で入力してください。半角文字は使用できません。", "answers.0.answer"),
    ("mixed full- and half-width", [], register(answers=(("q01", "やまだA"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答1は全角文字で入力してください。半角文字は使用できません。", "answers.0.answer"),
    ("narrow accented latin", [], register(answers=(("q01", "café"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答1は全角文字で入力してください。半角文字は使用できません。", "answers.0.answer"),
    ("SQL-ish answer", [], register(answers=(("q01", "' OR 1=1 --"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_not_full_width",
     "回答1は全角文字で入力してください。半角文字は使用できません。", "answers.0.answer"),
    ("emoji (Unicode calls it wide)", [], register(answers=(("q01", "ねこ😀"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答1に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.0.answer"),
    ("BMP emoji ⭐", [], register(answers=(("q01", "あ"), ("q03", "⭐"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答2に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.1.answer"),
    ("emoji sequence with ZWJ and VS16", [], register(answers=(("q01", "あ"), ("q03", "い"), ("q05", "👨\u200d👩\ufe0f"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答3に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.2.answer"),
    ("control character", [], register(answers=(("q01", "やま\x00だ"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答1に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.0.answer"),
    ("newline", [], register(answers=(("q01", "やま\nだ"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答1に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.0.answer"),
    ("combining dakuten (could never be retyped exactly)", [], register(answers=(("q01", "か\u3099"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答1に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.0.answer"),
    ("bidi override", [], register(answers=(("q01", "\u202eあ"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答1に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.0.answer"),
    ("private use", [], register(answers=(("q01", "\ue000"), ("q03", "い"), ("q05", "う"))),
     ValidationFailed, "secret_answer_invalid_character",
     "回答1に使用できない文字（絵文字・制御文字など）が含まれています。", "answers.0.answer"),
    ("not confirmed", [], register(confirmed=False),
     ValidationFailed, "confirmation_required",
     "回答内容をご確認のうえ、「確認しました。」にチェックしてください。", "confirmed"),
    ("confirmed must be exactly true", [], register(confirmed="true"),
     ValidationFailed, "confirmation_required",
     "回答内容をご確認のうえ、「確認しました。」にチェックしてください。", "confirmed"),
    ("registered, reset, registered again", [registered(), reset(), registered()], register(),
     Conflict, "secret_questions_already_registered", "秘密の質問は既に登録されています。", None),
]


@pytest.mark.parametrize("name,given,when,error,code,message,field", REGISTER_REFUSED,
                         ids=[c[0] for c in REGISTER_REFUSED])
def test_r_ini_1_registration_refused(name, given, when, error, code, message, field):
    with pytest.raises(error) as exc:
        given_when(given, when)
    assert exc.value.code == code
    assert exc.value.detail == message
    if field is not None:
        assert message in at(exc.value.extra["errors"], field)
    # The guard the service runs before hashing agrees with decide.
    with pytest.raises(error):
        d.check_registration(when, d.fold(given))


def test_r_ini_1_every_answer_problem_is_listed():
    with pytest.raises(ValidationFailed) as exc:
        given_when([], register(answers=(("q01", "abc"), ("q03", "い"), ("q05", "あいうえおかきくけこさし😀"))))
    errors = exc.value.extra["errors"]
    assert errors == {"answers": {
        "0": {"answer": ["回答1は全角文字で入力してください。半角文字は使用できません。"]},
        "2": {"answer": ["回答3に使用できない文字（絵文字・制御文字など）が含まれています。",
                         "回答3は全角10文字以内で入力してください。"]}}}
    assert exc.value.code == "secret_answer_not_full_width"   # the first problem leads


def test_r_ini_1_registration_after_operator_reset():
    events = given_when([registered(), reset()], register(answers=(("q02", "ぽち"), ("q04", "たろう"), ("q06", "はなこ"))))
    assert events[0].data["question_ids"] == ["q02", "q04", "q06"]


def test_r_ini_1_answers_never_in_events_only_verifiers():
    events = given_when([], register())
    assert "やまだ" not in repr(events[0].data)
    assert set(events[0].data["answer_verifiers"]) == {"q01", "q03", "q05"}


def test_r_ini_1_catalogue_is_fixed_japanese_and_large_enough():
    cat = d.catalogue()
    assert len(cat) >= 10
    assert len({q["id"] for q in cat}) == len(cat)
    assert cat[0] == {"id": "q01", "text": "母親の旧姓は？"}
    assert all(q["text"].endswith("？") for q in cat)


# -- then: answering (R-RBA-1, R-RBA-2) --------------------------------------------------------

ANSWER_TABLE = [
    ("right answer", [registered()], answer(matched=True), [verified()]),
    ("wrong answer: first failure", [registered()], answer(matched=False), [failed(1)]),
    ("wrong after 3 failures", [registered(), failed(1), failed(2), failed(3)], answer(matched=False),
     [failed(4)]),
    ("fifth consecutive failure locks", [registered(), failed(1), failed(2), failed(3), failed(4)],
     answer(matched=False), [failed(5), locked()]),
    ("threshold is configurable", [registered(), failed(1)], answer(matched=False, threshold=2),
     [failed(2), NewEvent("secret_answers_locked", {"customer_number": CN, "consecutive_failures": 2,
                                                     "threshold": 2, "locked_at": NOW.isoformat()})]),
    ("a right answer resets the count", [registered(), failed(1), failed(2), failed(3), failed(4), verified()],
     answer(matched=False), [failed(1)]),
    ("operator unlock resets the count", [registered()] + [failed(i) for i in range(1, 6)] + [locked(), unlocked()],
     answer(matched=False), [failed(1)]),
    ("timed release once due", [registered()] + [failed(i) for i in range(1, 6)] + [locked(at=NOW - timedelta(hours=2))],
     answer(matched=True, release_after=timedelta(hours=1)), [unlocked("timed_release"), verified()]),
]


@pytest.mark.parametrize("name,given,when,then", ANSWER_TABLE, ids=[c[0] for c in ANSWER_TABLE])
def test_r_rba_2_answers_and_lockout(name, given, when, then):
    assert shape(given_when(given, when)) == shape(then)


LOCKED_MESSAGE = ("秘密の質問の回答を所定の回数以上誤って入力されたため、ご利用を停止しています。"
                  "お手数ですが、お取引店またはネットバンキング共同受付センター（0120-892-548、9:00～21:00）"
                  "にご連絡ください。")

ANSWER_REFUSED = [
    ("not registered", [], answer(), NotFound, "secret_questions_not_registered",
     "秘密の質問が登録されていません。"),
    ("locked: even the right answer is refused", [registered()] + [failed(i) for i in range(1, 6)] + [locked()],
     answer(matched=True), Locked, "credential_locked", LOCKED_MESSAGE),
    ("locked, timed release not yet due", [registered(), locked(at=NOW - timedelta(minutes=10))],
     answer(matched=True, release_after=timedelta(hours=1)), Locked, "credential_locked", LOCKED_MESSAGE),
    ("a question the customer did not register", [registered()], answer(qid="q02"), ValidationFailed,
     "secret_question_not_registered_for_customer", "この秘密の質問ではご本人確認できません。"),
    ("after an operator reset", [registered(), reset()], answer(), NotFound, "secret_questions_not_registered",
     "秘密の質問が登録されていません。"),
]


@pytest.mark.parametrize("name,given,when,error,code,message", ANSWER_REFUSED, ids=[c[0] for c in ANSWER_REFUSED])
def test_r_rba_2_answer_refused(name, given, when, error, code, message):
    with pytest.raises(error) as exc:
        given_when(given, when)
    assert (exc.value.code, exc.value.detail) == (code, message)
    if error is Locked:
        assert exc.value.extra == {"credential": "secret_answers"}


def test_r_rba_1_question_rotates_and_repeats_after_a_wrong_answer():
    state = d.fold([registered()])
    assert d.question_to_ask(state) == "q01"
    state = d.fold([registered(), verified("q01")])
    assert d.question_to_ask(state) == "q03"
    state = d.fold([registered(), verified("q01"), verified("q03"), verified("q05")])
    assert d.question_to_ask(state) == "q01"
    # a wrongly answered question is asked again until it is answered right (no shopping)
    state = d.fold([registered(), verified("q01"), failed(1, "q03")])
    assert d.question_to_ask(state) == "q03"
    state = d.fold([registered(), verified("q01"), failed(1, "q03"), verified("q03")])
    assert d.question_to_ask(state) == "q05"


def test_r_rba_2_no_question_while_locked():
    with pytest.raises(Locked):
        d.question_to_ask(d.fold([registered(), locked()]))
    with pytest.raises(NotFound):
        d.question_to_ask(d.fold([]))


OPERATOR_TABLE = [
    ("unlock a lock", [registered(), locked()], d.UnlockSecretAnswers(CN), [unlocked()]),
    ("reset forgotten answers", [registered()], d.ResetSecretQuestions(CN), [reset()]),
]


@pytest.mark.parametrize("name,given,when,then", OPERATOR_TABLE, ids=[c[0] for c in OPERATOR_TABLE])
def test_r_rba_2_operator_procedures(name, given, when, then):
    assert shape(given_when(given, when)) == shape(then)


def test_r_rba_2_unlock_without_lock_is_a_conflict():
    with pytest.raises(Conflict) as exc:
        given_when([registered()], d.UnlockSecretAnswers(CN))
    assert exc.value.code == "secret_answers_not_locked"


def test_evolve_tracks_versions():
    state = d.fold([registered(), failed(1), failed(2)])
    assert state.version == 3 and state.consecutive_failures == 2 and state.retry_question == "q01"


@pytest.mark.parametrize("ch,cls", [
    ("あ", "full"), ("Ａ", "full"), ("\u3000", "full"), ("①", "full"), ("𠮷", "full"),
    ("A", "half"), ("ｱ", "half"), (" ", "half"), ("é", "half"), ("¥", "half"),
    ("😀", "invalid"), ("⭐", "invalid"), ("〰", "invalid"), ("\u200d", "invalid"), ("\ufe0f", "invalid"),
    ("\t", "invalid"), ("\u3099", "invalid"),
])
def test_r_ini_1_character_classes(ch, cls):
    assert d.character_class(ch) == cls
