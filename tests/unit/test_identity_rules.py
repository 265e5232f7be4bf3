"""Pure rules of identity: legacy records (R-LEG-1), the password rules of step 4 (R-INI-2),
argument shapes, and what an environment is (R-RBA-1)."""
from __future__ import annotations

import base64

import pytest

from contracts.errors import ValidationFailed
from identity.domain import inputs
from identity.domain import messages as msg
from identity.domain.environment import browser_family, environment_key, network_of
from identity.domain.legacy_record import (RecordRejected, mask_phone, normalise_phone, parse_verifier,
                                           phone_id, validate_record)
from identity.domain.passwords import validate_password_change

KEY = base64.b64encode(b"k" * 32).decode()
PBKDF2 = f"pbkdf2_sha256$260000$abcdefgh$" + KEY
BCRYPT = "$2b$12$" + "R9h/cIPz0gi.URNNX3kh2O" + "PST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"
GOOD = {"line": 2, "customer_number": "0123456789", "login_password_verifier": PBKDF2,
        "confirmation_pin_verifier": BCRYPT, "phones": "090-1234-5678", "email": "taro@example.jp"}


# -- R-LEG-1 legacy records ------------------------------------------------------------------

@pytest.mark.parametrize("raw,e164", [
    ("090-1234-5678", "+819012345678"),
    ("09012345678", "+819012345678"),
    ("090 1234 5678", "+819012345678"),
    ("０９０－１２３４－５６７８", "+819012345678"),           # full-width
    ("090ー1234ー5678", "+819012345678"),                  # katakana long vowel as a dash
    ("(03)1234-5678", "+81312345678"),
    ("03（1234）5678", "+81312345678"),
    ("+81-90-1234-5678", "+819012345678"),
    ("+81 3 1234 5678", "+81312345678"),
    ("0172-12-3456", "+81172123456"),                      # Aomori area code
    ("0120-892-548", "+81120892548"),                      # toll-free is still a valid number
])
def test_japanese_phone_notations_normalise_to_e164(raw, e164):
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize("raw", ["123", "090-1234-567", "abc", "+1 415 555 2671", "090-1234-5678; DROP TABLE", ""])
def test_invalid_or_foreign_phone_numbers_are_refused(raw):
    assert normalise_phone(raw) is None


def test_record_normalises_and_keeps_only_valid_phones():
    record = validate_record({**GOOD, "phones": " 090-1234-5678 ; 123 ; 09012345678 ; 03-1234-5678 ",
                              "email": "Taro.@DOCOMO.NE.JP"})
    assert record.phones == ("+819012345678", "+81312345678")   # duplicate dropped, order kept
    assert record.email == "Taro.@docomo.ne.jp"                   # old carrier addresses are accepted
    assert len(record.warnings) == 1 and "2 件目" in record.warnings[0]
    assert validate_record({**GOOD, "email": ""}).email is None


@pytest.mark.parametrize("change,reason", [
    ({"customer_number": "123456789"}, "invalid_customer_number"),
    ({"customer_number": "０１２３４５６７８９"}, "invalid_customer_number"),
    ({"customer_number": "01234567890"}, "invalid_customer_number"),
    ({"customer_number": "0123456789' OR '1'='1"}, "invalid_customer_number"),
    ({"customer_number": ""}, "missing_field"),
    ({"login_password_verifier": "Passw0rd"}, "unknown_verifier_scheme"),           # plaintext
    ({"login_password_verifier": "md5$abc$def"}, "unknown_verifier_scheme"),
    ({"login_password_verifier": "sha1$salt$abcdef"}, "unknown_verifier_scheme"),
    ({"confirmation_pin_verifier": "1234"}, "unknown_verifier_scheme"),
    ({"login_password_verifier": "pbkdf2_sha256$abc$salt$" + KEY}, "invalid_verifier"),
    ({"login_password_verifier": "pbkdf2_sha256$1000$salt$not base64"}, "invalid_verifier"),
    ({"login_password_verifier": "pbkdf2_sha256$1000$salt$" + base64.b64encode(b"x" * 4).decode()}, "invalid_verifier"),
    ({"login_password_verifier": "pbkdf2_sha256$10000001$salt$" + KEY}, "verifier_cost_out_of_range"),
    ({"login_password_verifier": "pbkdf2_sha256$0$salt$" + KEY}, "verifier_cost_out_of_range"),
    ({"login_password_verifier": "$2b$31$" + "a" * 53}, "verifier_cost_out_of_range"),
    ({"login_password_verifier": "$2b$10$short"}, "invalid_verifier"),
    ({"login_password_verifier": "$2x$10$" + "a" * 53}, "unknown_verifier_scheme"),
    ({"phones": "123;456"}, "no_valid_phone"),
    ({"phones": ""}, "missing_field"),
    ({"phones": ";".join(["090-1234-5678"] * 11)}, "too_many_phones"),
    ({"email": "not-an-address"}, "invalid_email"),
    ({"email": "太郎@example.jp"}, "invalid_email"),
    ({"email": "taro@example"}, "invalid_email"),
    ({"email": "a@b.jp\r\nBcc: x@y.jp"}, "invalid_email"),
    ({"email": "x" * 300}, "field_too_long"),
    ({"phones": "0" * 600}, "field_too_long"),
    ({"customer_number": 123456789}, "invalid_record"),
    ({"phones": ["090-1234-5678"]}, "invalid_record"),
])
def test_bad_records_are_rejected_with_a_reason(change, reason):
    with pytest.raises(RecordRejected) as exc:
        validate_record({**GOOD, **change})
    assert exc.value.reason == reason
    assert exc.value.message   # Japanese, for the operator


def test_missing_field_names_the_field_and_non_dicts_are_rejected():
    raw = dict(GOOD)
    del raw["confirmation_pin_verifier"]
    with pytest.raises(RecordRejected) as exc:
        validate_record(raw)
    assert exc.value.reason == "missing_field" and "confirmation_pin_verifier" in exc.value.message
    for junk in (None, "line", 5, ["a"]):
        with pytest.raises(RecordRejected):
            validate_record(junk)


def test_bcrypt_variants_and_pbkdf2_are_accepted():
    for prefix in ("$2a$", "$2b$", "$2y$"):
        assert parse_verifier(prefix + BCRYPT[4:]).scheme == "bcrypt"
    spec = parse_verifier(PBKDF2)
    assert (spec.scheme, spec.cost, spec.salt) == ("pbkdf2_sha256", 260000, "abcdefgh")


def test_digest_identifies_content_not_order_of_phones():
    a = validate_record({**GOOD, "phones": "090-1234-5678;03-1234-5678"})
    b = validate_record({**GOOD, "phones": "03-1234-5678;090-1234-5678"})
    c = validate_record({**GOOD, "phones": "03-1234-5678"})
    assert a.digest == b.digest != c.digest


def test_masked_phone_and_stable_phone_id():
    assert mask_phone("+819012341234") == "*****1234"
    assert phone_id("0123456789", "+819012341234") == phone_id("0123456789", "+819012341234")
    assert phone_id("0123456789", "+819012341234") != phone_id("0123456780", "+819012341234")


# -- R-INI-2 password rules --------------------------------------------------------------------

BODY = {"current_login_password": "oldPass1", "new_login_password": "NewPass12",
        "new_login_password_confirmation": "NewPass12", "current_confirmation_password": "oldPin12",
        "new_confirmation_password": "pin98765", "new_confirmation_password_confirmation": "pin98765"}


def test_valid_password_change():
    change = validate_password_change(BODY)
    assert change.new_login_password == "NewPass12" and change.new_confirmation_password == "pin98765"
    # the guide asks mixed case of the login password only, no digit: letters alone are fine
    assert validate_password_change({**BODY, "new_login_password": "abcDEF",
                                     "new_login_password_confirmation": "abcDEF"})


@pytest.mark.parametrize("change,field,message", [
    ({"new_login_password": "Ab1", "new_login_password_confirmation": "Ab1"}, "new_login_password",
     "新しいログインパスワードは半角英数字6～12桁で入力してください。"),
    ({"new_login_password": "Abcdefgh12345", "new_login_password_confirmation": "Abcdefgh12345"},
     "new_login_password", "新しいログインパスワードは半角英数字6～12桁で入力してください。"),
    ({"new_login_password": "Ａｂｃｄｅｆ1", "new_login_password_confirmation": "Ａｂｃｄｅｆ1"},
     "new_login_password", "新しいログインパスワードは半角英数字6～12桁で入力してください。"),
    ({"new_login_password": "Abc-def1", "new_login_password_confirmation": "Abc-def1"},
     "new_login_password", "新しいログインパスワードは半角英数字6～12桁で入力してください。"),
    ({"new_login_password": "abcdef12", "new_login_password_confirmation": "abcdef12"},
     "new_login_password", msg.LOGIN_PASSWORD_MIXED_CASE),
    ({"new_login_password": "ABCDEF12", "new_login_password_confirmation": "ABCDEF12"},
     "new_login_password", msg.LOGIN_PASSWORD_MIXED_CASE),
    ({"new_login_password_confirmation": "NewPass13"}, "new_login_password_confirmation",
     "新しいログインパスワード（再入力）が一致しません。確認のため同じものを再度入力してください。"),
    ({"new_confirmation_password_confirmation": "pin98766"}, "new_confirmation_password_confirmation",
     "新しい確認用パスワード（再入力）が一致しません。確認のため同じものを再度入力してください。"),
    ({"new_login_password": "oldPass1", "new_login_password_confirmation": "oldPass1"}, "new_login_password",
     "「現在のログインパスワード」と同一のものはご利用いただけません。"),
    ({"new_confirmation_password": "oldPin12", "new_confirmation_password_confirmation": "oldPin12"},
     "new_confirmation_password", "「現在の確認用パスワード」と同一のものはご利用いただけません。"),
    ({"new_confirmation_password": "NewPass12", "new_confirmation_password_confirmation": "NewPass12"},
     "new_confirmation_password", "新しいログインパスワードと新しい確認用パスワードは異なるものを設定してください。"),
    ({"new_confirmation_password": "pin1", "new_confirmation_password_confirmation": "pin1"},
     "new_confirmation_password", "新しい確認用パスワードは半角英数字6～12桁で入力してください。"),
    ({"current_login_password": ""}, "current_login_password", "現在のログインパスワードを入力してください。"),
    ({"current_login_password": None}, "current_login_password", "現在のログインパスワードを入力してください。"),
    ({"current_confirmation_password": 1234}, "current_confirmation_password", "現在の確認用パスワードは文字で入力してください。"),
    ({"current_login_password": "パスワード"}, "current_login_password", "現在のログインパスワードは半角英数字で入力してください。"),
    ({"current_login_password": "pass😀1"}, "current_login_password", "現在のログインパスワードは半角英数字で入力してください。"),
    ({"current_login_password": "x" * 65}, "current_login_password", "現在のログインパスワードが長すぎます。"),
    ({"new_login_password": "Ab1'--;", "new_login_password_confirmation": "Ab1'--;"}, "new_login_password",
     "新しいログインパスワードは半角英数字6～12桁で入力してください。"),
])
def test_password_rules_with_their_japanese_messages(change, field, message):
    with pytest.raises(ValidationFailed) as exc:
        validate_password_change({**BODY, **change})
    assert message in exc.value.extra["errors"][field]
    assert exc.value.status == 422


def test_every_broken_rule_is_reported_at_once():
    with pytest.raises(ValidationFailed) as exc:
        validate_password_change({})
    assert set(exc.value.extra["errors"]) == set(BODY)
    for junk in (None, [], "body"):
        with pytest.raises(ValidationFailed):
            validate_password_change(junk)


# -- argument shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", 123, "12345", "０１２３４５６７８９", "0123456789 ", "x" * 1000,
                                   "0123456789'; DROP TABLE eventstore.events; --", "01234😀6789", ["0123456789"]])
def test_customer_number_shape(value):
    with pytest.raises(ValidationFailed):
        inputs.customer_number(value)


@pytest.mark.parametrize("value", [None, "", 12345678, "パスワード", "pass word", "x" * 65, "😀😀😀😀😀😀", {"a": 1}])
def test_password_shape(value):
    with pytest.raises(ValidationFailed):
        inputs.password(value)


def test_client_shape():
    assert inputs.client(None) == inputs.ClientInfo()
    c = inputs.client({"device_id": "d1", "address": "192.0.2.1", "user_agent": "x" * 5000})
    assert len(c.user_agent) == inputs.MAX_USER_AGENT
    for junk in ("client", {"device_id": 5}, {"device_id": "d" * 201}, {"address": "1.2.3.4\n"}):
        with pytest.raises(ValidationFailed):
            inputs.client(junk)


# -- R-RBA-1 environments ----------------------------------------------------------------------

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
IPHONE_NEXT = IPHONE.replace("17_5", "17_6").replace("17.5", "17.6")
CHROME_WIN = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0.0.0 Safari/537.36")
EDGE_WIN = CHROME_WIN + " Edg/126.0.0.0"


def env(device=None, address=None, ua=None):
    return environment_key(inputs.ClientInfo(device, address, ua))


def test_browser_and_network_families():
    assert browser_family(IPHONE) == "safari/ios"
    assert browser_family(CHROME_WIN) == "chrome/windows"
    assert browser_family(EDGE_WIN) == "edge/windows"
    assert browser_family(None) == "other/other"
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2::5") == "2001:db8:1::/48"
    assert network_of("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert network_of("not an ip") == "unknown"


def test_environment_key_rules():
    # a device id decides on its own
    assert env("dev-1", "203.0.113.1", IPHONE) == env("dev-1", "198.51.100.1", CHROME_WIN)
    assert env("dev-1") != env("dev-2")
    # without one: same /24 and browser family is the same environment, versions do not matter
    assert env(None, "203.0.113.1", IPHONE) == env(None, "203.0.113.200", IPHONE_NEXT)
    assert env(None, "203.0.113.1", IPHONE) != env(None, "203.0.114.1", IPHONE)
    assert env(None, "203.0.113.1", CHROME_WIN) != env(None, "203.0.113.1", EDGE_WIN)
    assert len(env("dev-1")) == 32 and "dev-1" not in env("dev-1")


# -- the CSV as `tsunagi import-legacy` reads it --------------------------------------------------

def test_csv_reading_bom_quotes_blank_lines_and_bad_header(tmp_path):
    from services.cli import CommandFailed
    from services.cli.import_legacy import read_records

    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffcustomer_number,login_password_verifier,confirmation_pin_verifier,phones,email,branch\n"
                     '0123456789,v1,v2,"090-1234-5678;\n03-1234-5678",,本店\n'
                     "\n"
                     "0123456780,v1,v2,090-1234-5678,\n".encode("utf-8")
                     + b"0123456781,v1,v2,090-1234-5678,\xff@x.jp,x\n")
    items = list(read_records(path))
    assert items[0] == ("record", {"line": 2, "customer_number": "0123456789", "login_password_verifier": "v1",
                                   "confirmation_pin_verifier": "v2", "phones": "090-1234-5678;\n03-1234-5678",
                                   "email": ""})
    assert items[1][0] == "reject" and items[1][1]["reason"] == "wrong_column_count" and items[1][1]["line"] == 5
    assert items[2][0] == "reject" and items[2][1]["reason"] == "invalid_encoding" and items[2][1]["line"] == 6
    bad = tmp_path / "b.csv"
    bad.write_text("number,password\n1,2\n")
    with pytest.raises(CommandFailed, match="customer_number"):
        list(read_records(bad))
    empty = tmp_path / "c.csv"
    empty.write_text("")
    with pytest.raises(CommandFailed):
        list(read_records(empty))
