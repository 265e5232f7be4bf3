"""Validators refuse a value with a trailing newline (R-PLT-3: bad input changes nothing).

Python's ``$`` also matches just before a final ``\\n``, so ``re.match(r"^[0-9]{10}$",
"0123456789\\n")`` succeeds; the validators anchor with ``\\Z`` instead. Each test shows the
clean value passes, so a refusal of the ``\\n`` form is the anchor's doing."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError

from contracts import mail_otp, passkeys as passkeys_contract, phone_auth, secret_questions
from contracts.errors import ValidationFailed
from identity.passkeys import credential_id_of
from notifier import select_email
from otp_service import mail_otp_service, service as otp_service

NUMBER = "0123456789"


@pytest.mark.parametrize("customer_number", [otp_service._customer_number, mail_otp_service._customer_number,
                                             select_email._customer_number],
                         ids=["otp_service", "mail_otp_service", "notifier.select_email"])
def test_service_customer_number_checks_refuse_a_trailing_newline(customer_number):
    assert customer_number(NUMBER) == NUMBER
    with pytest.raises(ValidationFailed):
        customer_number(NUMBER + "\n")


@pytest.mark.parametrize("schema, extra", [
    (passkeys_contract.CustomerPayload, {}),
    (secret_questions.CustomerPayload, {}),
    (phone_auth.StartVerificationPayload, {"application_id": "a1", "caller_e164": "+81177000000"}),
], ids=["contracts.passkeys", "contracts.secret_questions", "contracts.phone_auth"])
def test_contract_customer_number_refuses_a_trailing_newline(schema, extra):
    assert schema().load({"customer_number": NUMBER, **extra})["customer_number"] == NUMBER
    with pytest.raises(ValidationError) as refused:
        schema().load({"customer_number": NUMBER + "\n", **extra})
    assert "customer_number" in refused.value.messages


def test_application_id_pattern_refuses_a_trailing_newline():
    application_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert otp_service._UUID.match(application_id)
    assert not otp_service._UUID.match(application_id + "\n")


def test_token_serial_pattern_refuses_a_trailing_newline():
    serial = otp_service.new_token_serial()
    assert otp_service._TOKEN_SERIAL.match(serial)
    assert not otp_service._TOKEN_SERIAL.match(serial + "\n")


def test_passkey_credential_id_refuses_a_trailing_newline():
    assert credential_id_of({"id": "AbC_-123"}) == "AbC_-123"
    assert credential_id_of({"id": "AbC_-123\n"}) is None


@pytest.mark.parametrize("address", ["taro\n@example.jp", "taro@example\n.jp", "taro@example.jp\n.jp"])
def test_mail_address_parts_refuse_a_trailing_newline(address):
    assert mail_otp.normalise_email("taro@example.jp") == "taro@example.jp"
    assert mail_otp.normalise_email(address) is None


def transfer(**payee) -> dict:
    return {"type": mail_otp.TRANSFER, "amount": 1000, "payee": {
        "bank_code": "0117", "branch_code": "001", "account_type": mail_otp.ACCOUNT_TYPES[0],
        "account_number": "1234567", "name": "ツナギ タロウ", **payee}}


@pytest.mark.parametrize("field", ["bank_code", "branch_code", "account_number"])
def test_transfer_digit_fields_refuse_a_trailing_newline(field):
    clean = mail_otp.canonical_operation(transfer())
    with pytest.raises(ValidationFailed) as refused:
        mail_otp.canonical_operation(transfer(**{field: clean["payee"][field][:-1] + "\n"}))
    assert f"operation.payee.{field}" in refused.value.extra["errors"]


def test_settings_change_name_refuses_a_trailing_newline():
    operation = {"type": mail_otp.SETTINGS_CHANGE, "setting": "transfer_limit", "changes": {"daily": 100}}
    assert mail_otp.canonical_operation(operation)["setting"] == "transfer_limit"
    with pytest.raises(ValidationFailed):
        mail_otp.canonical_operation({**operation, "setting": "transfer_limit\n"})
    with pytest.raises(ValidationFailed):
        mail_otp.canonical_operation({**operation, "changes": {"daily\n": 100}})
