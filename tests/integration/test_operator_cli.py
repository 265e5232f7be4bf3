"""`tsunagi operator …` (issue 6 item 4, R-LEG-4, R-RBA-2): operator procedures go through the
owning service by RPC and are events naming the operator and the reason.

Runs against the identity service (real Nameko service, real RabbitMQ and PostgreSQL) started
in-process by the `cluster` fixture of test_identity_service; the CLI is a separate process.
"""
from __future__ import annotations

import json

from contracts.errors import Locked

from tests.integration.test_cli import tsunagi
from tests.integration.test_identity_service import (HOME, LOGIN_PW, cluster, events,  # noqa: F401
                                                     imported, outcome, proxy)


def _locked_customer(cluster) -> str:  # noqa: F811
    with proxy(cluster) as p:
        number = imported(p)
        for i in range(5):
            outcome(lambda: p.identity.legacy_login(number, f"Wrong{i}x", HOME))
        assert outcome(lambda: p.identity.legacy_login(number, LOGIN_PW, HOME))[0] == "credential_locked"
    return number


def test_unlock_credential_lets_the_customer_log_in_and_is_recorded_R_LEG_4(cluster, store):  # noqa: F811
    number = _locked_customer(cluster)
    result = tsunagi("operator", "unlock-credential", number, "--credential", "legacy_password",
                     "--operator", "op-7", "--reason", "paper form 2026-113", "--json",
                     env={"AMQP_URI": cluster["AMQP_URI"]})
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["ok"] is True and out["result"]["status"] == "unlocked"
    unlocked = events(store, number)[-1]
    assert unlocked.type == "credential_unlocked"
    assert unlocked.metadata["actor"] == {"kind": "operator", "id": "op-7"}
    assert unlocked.metadata["reason"] == "paper form 2026-113"
    assert unlocked.metadata["correlation_id"] == out["correlation_id"]
    with proxy(cluster) as p:
        assert p.identity.legacy_login(number, LOGIN_PW, HOME)["customer_number"] == number


def test_a_refused_procedure_exits_1_with_the_services_code(cluster):  # noqa: F811
    with proxy(cluster) as p:
        number = imported(p)        # not locked: nothing to unlock
    result = tsunagi("operator", "unlock-credential", number, "--credential", "legacy_password",
                     "--operator", "op-7", "--reason", "form", env={"AMQP_URI": cluster["AMQP_URI"]})
    assert result.returncode == 1
    assert "identity.unlock_credential refused" in result.stderr and "Traceback" not in result.stderr


def test_operator_and_reason_are_required_R_LEG_4():
    for missing in (["--operator", "op-1"], ["--reason", "form"]):
        result = tsunagi("operator", "reset-secret-questions", "0123456789", *missing)
        assert result.returncode == 2
        assert "required" in result.stderr


# -- secret questions (the real secret_questions service) -------------------------------------

from tests.integration.test_secret_questions_service import (ANSWERS, new_customer,  # noqa: E402,F401
                                                             rpc, rpc_config, stream)


def test_reset_and_unlock_secret_questions_by_cli_R_LEG_4_R_INI_1(rpc, rpc_config, store):  # noqa: F811
    cn = new_customer()
    rpc.secret_questions.register(cn, ANSWERS, True)
    for _ in range(5):
        try:
            rpc.secret_questions.verify_answer(cn, "q01", "ちがう")
        except Locked:           # the fifth wrong answer locks (R-RBA-2)
            pass
    assert rpc.secret_questions.status(cn)["locked"] is True
    env = {"AMQP_URI": rpc_config["AMQP_URI"]}
    unlock = tsunagi("operator", "unlock-secret-questions", cn, "--operator", "op-9",
                     "--reason", "本人確認済み", env=env)
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    assert rpc.secret_questions.status(cn)["locked"] is False
    reset = tsunagi("operator", "reset-secret-questions", cn, "--operator", "op-9",
                    "--reason", "回答を失念", env=env)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert rpc.secret_questions.status(cn)["registered"] is False
    recorded = stream(store, cn)[-2:]
    assert [(e.metadata["actor"]["id"], e.metadata["reason"]) for e in recorded] == [
        ("op-9", "本人確認済み"), ("op-9", "回答を失念")]
    assert all(e.metadata["actor"]["kind"] == "operator" for e in recorded)


def test_every_procedure_of_R_LEG_4_is_a_command_with_help():
    listing = tsunagi("operator", "--help")
    assert listing.returncode == 0
    for command in ("reissue-login-password", "reset-confirmation-password", "change-phones",
                    "release-otp", "initialise-login-id", "remove-passkeys"):
        assert command in listing.stdout
    no_phone = tsunagi("operator", "change-phones", "0123456789", "--operator", "op-1", "--reason", "form")
    assert no_phone.returncode == 2 and "--phone" in no_phone.stderr
