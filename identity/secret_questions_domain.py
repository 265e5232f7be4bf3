"""Secret questions (秘密の質問) — the pure decider and the fixed catalogue.

SPEC R-INI-1 (step 3 of the smartphone guide): exactly three distinct questions from a fixed
catalogue, each answered with 1–10 full-width characters (「全角10文字以内」), and the customer
must tick 「確認しました。」 before confirming. Later answers must match 一字一句同じ, so
nothing is normalised: what the customer typed at registration is what must be typed again.
R-RBA-1: one of the three questions is the step-up challenge of an unusual login.
R-RBA-2: consecutive wrong answers lock the answers (operator unlock or configured timed
release).

No I/O, clock or randomness here: the service hashes and verifies answers (argon2id, in real
threads) and passes the outcome, the verifiers and ``now`` in the commands.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Mapping

from contracts.errors import Conflict, Locked, NotFound, ValidationFailed
from contracts.events import NewEvent, RecordedEvent
from identity.domain.messages import CONTACT   # one contact line for every lockout message

# -- the catalogue -----------------------------------------------------------------------------
# Ids are stable forever: registrations refer to them. Retire a question by leaving it out of
# OFFERED (existing registrations keep working), never by renumbering.

CATALOGUE: Mapping[str, str] = MappingProxyType({
    "q01": "母親の旧姓は？",
    "q02": "最初に飼ったペットの名前は？",
    "q03": "卒業した小学校の名前は？",
    "q04": "子どもの頃のあだ名は？",
    "q05": "父親の出身地は？",
    "q06": "子どもの頃に一番仲の良かった友達の名前は？",
    "q07": "初めて買った車の車種は？",
    "q08": "尊敬する人物の名前は？",
    "q09": "好きな食べ物は？",
    "q10": "思い出の旅行先は？",
    "q11": "好きな映画の題名は？",
    "q12": "初めて勤めた会社の名前は？",
})
OFFERED: tuple[str, ...] = tuple(CATALOGUE)

QUESTIONS_REQUIRED = 3
ANSWER_MAX_CHARS = 10
DEFAULT_LOCKOUT_THRESHOLD = 5


def catalogue() -> list[dict]:
    return [{"id": qid, "text": CATALOGUE[qid]} for qid in OFFERED]


# -- messages (Japanese, for the customer) ----------------------------------------------------

MSG_COUNT = "秘密の質問は3つ選択し、それぞれに回答を入力してください。"
MSG_UNKNOWN_QUESTION = "選択された秘密の質問が正しくありません。一覧から選択してください。"
MSG_NOT_DISTINCT = "秘密の質問はそれぞれ異なるものを3つ選択してください。"
MSG_ANSWER_REQUIRED = "回答{n}を入力してください。"
MSG_ANSWER_TOO_LONG = "回答{n}は全角10文字以内で入力してください。"
MSG_ANSWER_HALF_WIDTH = "回答{n}は全角文字で入力してください。半角文字は使用できません。"
MSG_ANSWER_BAD_CHAR = "回答{n}に使用できない文字（絵文字・制御文字など）が含まれています。"
MSG_NOT_CONFIRMED = "回答内容をご確認のうえ、「確認しました。」にチェックしてください。"
MSG_ALREADY_REGISTERED = "秘密の質問は既に登録されています。"
MSG_NOT_REGISTERED = "秘密の質問が登録されていません。"
MSG_OPERATOR_ONLY = "この操作はお取引店の担当者のみ行えます。"
MSG_NOT_YOUR_QUESTION = "この秘密の質問ではご本人確認できません。"
MSG_LOCKED = ("秘密の質問の回答を所定の回数以上誤って入力されたため、ご利用を停止しています。"
              f"お手数ですが、お取引店または{CONTACT}にご連絡ください。")

# Stable codes (problem+json ``code``) per rule.
CODE_COUNT = "secret_questions_count"
CODE_UNKNOWN_QUESTION = "secret_question_unknown"
CODE_NOT_DISTINCT = "secret_questions_not_distinct"
CODE_ANSWER_REQUIRED = "secret_answer_required"
CODE_ANSWER_TOO_LONG = "secret_answer_too_long"
CODE_ANSWER_HALF_WIDTH = "secret_answer_not_full_width"
CODE_ANSWER_BAD_CHAR = "secret_answer_invalid_character"
CODE_NOT_CONFIRMED = "confirmation_required"
CODE_ALREADY_REGISTERED = "secret_questions_already_registered"
CODE_NOT_REGISTERED = "secret_questions_not_registered"
CODE_NOT_YOUR_QUESTION = "secret_question_not_registered_for_customer"
# The same code as every other locked credential (identity's), told apart by ``credential``.
CODE_LOCKED = "credential_locked"
CREDENTIAL = "secret_answers"


# -- what counts as a full-width character ----------------------------------------------------
# The guide says 「全角」. In Japanese systems that means the characters a Japanese IME produces
# as double-width: kana, kanji, 全角英数 (Ａ-Ｚ, ０-９), full-width punctuation and the JIS symbols
# (○ ※ ① α …). Concretely a character is accepted when it is a graphic character and either
#  - Unicode calls it Wide or Fullwidth (East_Asian_Width W/F: kana, all CJK ideographs incl.
#    the supplementary planes such as 𠮷, 全角英数, the ideographic space), or
#  - it is a double-byte character of Windows-31J (cp932), the encoding the bank's Japanese
#    front ends historically used — this admits the "ambiguous-width" JIS symbols ○ ※ ① α ±.
# Half-width (ASCII, ｱｲｳ half-width katakana) and other narrow characters (é) are refused with
# a message saying full-width is required. Emoji (many are Wide in Unicode!), control and
# format characters (ZWJ, bidi marks), combining marks and variation selectors (an answer typed
# with them could never be retyped 一字一句同じ), private-use and unassigned code points are
# refused as unusable characters.

_NOT_GRAPHIC = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Mn", "Mc", "Me"}
_EMOJI_BMP = {0x3030, 0x303D, 0x3297, 0x3299}


def _is_emoji(cp: int, eaw: str) -> bool:
    if 0x1F000 <= cp <= 0x1FAFF:          # mahjong … symbols and pictographs extended-A
        return True
    if 0x2000 <= cp <= 0x2BFF and eaw == "W":   # ⌚ ☔ ⚡ ✅ ⭐ …: the emoji-presentation ones
        return True
    return cp in _EMOJI_BMP


def _cp932_double_byte(ch: str) -> bool:
    try:
        return len(ch.encode("cp932")) == 2
    except UnicodeEncodeError:
        return False


def character_class(ch: str) -> str:
    """'full' (accepted), 'half' (not full-width) or 'invalid' (emoji, control, …)."""
    cp = ord(ch)
    if unicodedata.category(ch) in _NOT_GRAPHIC:
        return "invalid"
    eaw = unicodedata.east_asian_width(ch)
    if _is_emoji(cp, eaw):
        return "invalid"
    if eaw in ("W", "F"):
        return "full"
    if eaw in ("H", "Na"):
        return "half"
    return "full" if _cp932_double_byte(ch) else "half"


def answer_problems(answer: str, n: int) -> list[tuple[str, str]]:
    """The rule violations of one answer as (code, message); ``n`` numbers it for the message."""
    if answer == "" or all(ch == "\u3000" for ch in answer):
        return [(CODE_ANSWER_REQUIRED, MSG_ANSWER_REQUIRED.format(n=n))]
    problems = []
    classes = {character_class(ch) for ch in answer}
    if "invalid" in classes:
        problems.append((CODE_ANSWER_BAD_CHAR, MSG_ANSWER_BAD_CHAR.format(n=n)))
    if "half" in classes:
        problems.append((CODE_ANSWER_HALF_WIDTH, MSG_ANSWER_HALF_WIDTH.format(n=n)))
    if len(answer) > ANSWER_MAX_CHARS:
        problems.append((CODE_ANSWER_TOO_LONG, MSG_ANSWER_TOO_LONG.format(n=n)))
    return problems


# -- state ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SecretQuestions:
    customer_number: str | None = None
    registered: bool = False
    question_ids: tuple[str, ...] = ()
    verifiers: Mapping[str, str] = field(default_factory=dict)
    consecutive_failures: int = 0
    locked: bool = False
    locked_at: datetime | None = None
    # A question answered wrongly is asked again until answered right, so a caller cannot
    # "shop" for the question it knows by restarting the login.
    retry_question: str | None = None
    verified_count: int = 0
    version: int = 0


initial_state = SecretQuestions()


def evolve(state: SecretQuestions, event: RecordedEvent | NewEvent) -> SecretQuestions:
    d = event.data
    version = getattr(event, "stream_version", state.version + 1)
    t = event.type
    if t == "secret_questions_registered":
        state = replace(state, customer_number=d["customer_number"], registered=True,
                        question_ids=tuple(d["question_ids"]),
                        verifiers=dict(d.get("answer_verifiers") or {}),
                        consecutive_failures=0, retry_question=None)
    elif t == "secret_answer_verified":
        state = replace(state, consecutive_failures=0, retry_question=None,
                        verified_count=state.verified_count + 1)
    elif t == "secret_answer_failed":
        state = replace(state, consecutive_failures=d["consecutive_failures"],
                        retry_question=d["question_id"])
    elif t == "secret_answers_locked":
        state = replace(state, locked=True, locked_at=_parse_time(d.get("locked_at")))
    elif t == "secret_answers_unlocked":
        state = replace(state, locked=False, locked_at=None, consecutive_failures=0)
    elif t == "secret_questions_reset":
        state = replace(initial_state, customer_number=state.customer_number,
                        verified_count=state.verified_count)
    return replace(state, version=version)


def fold(events) -> SecretQuestions:
    state = initial_state
    for e in events:
        state = evolve(state, e)
    return state


def _parse_time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


# -- commands ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    question_id: str
    answer: str


@dataclass(frozen=True)
class RegisterSecretQuestions:
    customer_number: str
    answers: tuple[Answer, ...]
    confirmed: bool
    # question_id -> argon2id verifier of the answer; computed by the service after
    # check_registration passed (hashing is neither pure nor cheap).
    verifiers: Mapping[str, str] | None = None


@dataclass(frozen=True)
class VerifySecretAnswer:
    customer_number: str
    question_id: str
    matched: bool | None          # the outcome of the argon2 verification
    now: datetime
    lockout_threshold: int = DEFAULT_LOCKOUT_THRESHOLD
    release_after: timedelta | None = None   # None: only an operator unlocks


@dataclass(frozen=True)
class UnlockSecretAnswers:
    customer_number: str


@dataclass(frozen=True)
class ResetSecretQuestions:
    customer_number: str


# -- guards (pure; the service calls them before doing expensive work) -------------------------

def check_registration(cmd: RegisterSecretQuestions, state: SecretQuestions) -> None:
    """Raise the first broken rule of R-INI-1 (with every answer-level problem listed in
    ``errors``), or return. A finished step is never repeated: 409 before anything else.

    ``errors`` is nested like the gateway's own validation errors (marshmallow's shape), e.g.
    ``{"answers": {"2": {"answer": [message]}}}``, so a front end reads one format."""
    if state.registered:
        raise Conflict(MSG_ALREADY_REGISTERED, CODE_ALREADY_REGISTERED)
    answers = cmd.answers
    if len(answers) != QUESTIONS_REQUIRED:
        raise ValidationFailed(MSG_COUNT, CODE_COUNT, errors={"answers": [MSG_COUNT]})
    for i, a in enumerate(answers):
        if a.question_id not in OFFERED:
            raise ValidationFailed(MSG_UNKNOWN_QUESTION, CODE_UNKNOWN_QUESTION,
                                   errors=_at(i, "question_id", [MSG_UNKNOWN_QUESTION]))
    if len({a.question_id for a in answers}) != QUESTIONS_REQUIRED:
        raise ValidationFailed(MSG_NOT_DISTINCT, CODE_NOT_DISTINCT,
                               errors={"answers": [MSG_NOT_DISTINCT]})
    per_answer: dict[str, dict] = {}
    first: tuple[str, str] | None = None
    for i, a in enumerate(answers):
        problems = answer_problems(a.answer, i + 1)
        if problems:
            per_answer[str(i)] = {"answer": [m for _, m in problems]}
            first = first or problems[0]
    if first:
        raise ValidationFailed(first[1], first[0], errors={"answers": per_answer})
    if cmd.confirmed is not True:
        raise ValidationFailed(MSG_NOT_CONFIRMED, CODE_NOT_CONFIRMED,
                               errors={"confirmed": [MSG_NOT_CONFIRMED]})


def _at(index: int, field_name: str, messages: list[str]) -> dict:
    return {"answers": {str(index): {field_name: messages}}}


def lock_released(state: SecretQuestions, now: datetime, release_after: timedelta | None) -> bool:
    return (state.locked and release_after is not None and state.locked_at is not None
            and now >= state.locked_at + release_after)


def check_answerable(state: SecretQuestions, question_id: str, now: datetime,
                     release_after: timedelta | None) -> None:
    """May this customer be asked / answer ``question_id`` now? Checked before the hash."""
    if not state.registered:
        raise NotFound(MSG_NOT_REGISTERED, CODE_NOT_REGISTERED)
    if state.locked and not lock_released(state, now, release_after):
        raise Locked(MSG_LOCKED, CODE_LOCKED, credential=CREDENTIAL)
    if question_id not in state.question_ids:
        raise ValidationFailed(MSG_NOT_YOUR_QUESTION, CODE_NOT_YOUR_QUESTION)


def question_to_ask(state: SecretQuestions) -> str:
    """One of the customer's three: the one answered wrongly last (until it is answered
    right), otherwise the next in rotation."""
    if not state.registered:
        raise NotFound(MSG_NOT_REGISTERED, CODE_NOT_REGISTERED)
    if state.locked:
        raise Locked(MSG_LOCKED, CODE_LOCKED, credential=CREDENTIAL)
    if state.retry_question in state.question_ids:
        return state.retry_question
    return state.question_ids[state.verified_count % len(state.question_ids)]


# -- decide -----------------------------------------------------------------------------------

def decide(cmd, state: SecretQuestions) -> list[NewEvent]:
    if isinstance(cmd, RegisterSecretQuestions):
        return _register(cmd, state)
    if isinstance(cmd, VerifySecretAnswer):
        return _verify(cmd, state)
    if isinstance(cmd, UnlockSecretAnswers):
        if not state.locked:
            raise Conflict("秘密の質問の回答はロックされていません。", "secret_answers_not_locked")
        return [NewEvent("secret_answers_unlocked",
                         {"customer_number": cmd.customer_number, "release": "operator"})]
    if isinstance(cmd, ResetSecretQuestions):
        if not state.registered:
            raise NotFound(MSG_NOT_REGISTERED, CODE_NOT_REGISTERED)
        return [NewEvent("secret_questions_reset", {"customer_number": cmd.customer_number})]
    raise TypeError(f"unknown command {type(cmd).__name__}")


def _register(cmd: RegisterSecretQuestions, state: SecretQuestions) -> list[NewEvent]:
    check_registration(cmd, state)
    ids = [a.question_id for a in cmd.answers]
    if cmd.verifiers is None or set(cmd.verifiers) != set(ids):
        raise ValueError("a verifier for each answer is required")
    return [NewEvent("secret_questions_registered", {
        "customer_number": cmd.customer_number, "question_ids": ids,
        "answer_verifiers": {qid: cmd.verifiers[qid] for qid in ids}, "confirmed": True})]


def _verify(cmd: VerifySecretAnswer, state: SecretQuestions) -> list[NewEvent]:
    check_answerable(state, cmd.question_id, cmd.now, cmd.release_after)
    if cmd.matched is None:
        raise ValueError("the outcome of the verification is required")
    events: list[NewEvent] = []
    failures = state.consecutive_failures
    if state.locked:   # released by time (check_answerable let it through)
        events.append(NewEvent("secret_answers_unlocked", {
            "customer_number": cmd.customer_number, "release": "timed_release"}))
        failures = 0
    base = {"customer_number": cmd.customer_number, "question_id": cmd.question_id}
    if cmd.matched:
        events.append(NewEvent("secret_answer_verified", base))
        return events
    failures += 1
    events.append(NewEvent("secret_answer_failed", {**base, "consecutive_failures": failures}))
    if failures >= cmd.lockout_threshold:
        events.append(NewEvent("secret_answers_locked", {
            "customer_number": cmd.customer_number, "consecutive_failures": failures,
            "threshold": cmd.lockout_threshold, "locked_at": cmd.now.isoformat()}))
    return events
