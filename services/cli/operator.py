"""`tsunagi operator …`: the paper procedures of R-LEG-4 / R-RBA-2, done by an operator.

Each procedure calls the owning service over Nameko RPC (never the store): the service
decides, writes the event and its read models. The operator's identity and reason travel as
Nameko context data (``actor_kind=operator``, ``actor_id``, ``reason``), which the services'
RequestContext turns into the event's metadata, so every procedure is an event naming the
operator and the reason. Exit 0 done; 1 refused by the service (its code and Japanese detail
are printed) or the service could not be reached.

``reissue-login-password`` and ``reset-confirmation-password`` print a one-time temporary
password for the operator to hand over: it is shown once (and in ``--json`` output), stored
only as an argon2id hash, and must be changed by the customer before anything else.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.cli._common import add_debug_flag, add_json_flag, emit_json


@dataclass(frozen=True)
class Procedure:
    command: str
    service: str
    method: str
    help: str
    credential: bool = False    # takes --credential
    phones: bool = False        # takes --phone NUMBER (one or more)
    description: str = ""


PROCEDURES = (
    Procedure("unlock-credential", "identity", "unlock_credential",
              "release a locked credential (R-RBA-2)", credential=True),
    Procedure("unlock-secret-questions", "secret_questions", "unlock",
              "lift the lock of the secret answers (R-RBA-2)"),
    Procedure("reset-secret-questions", "secret_questions", "reset",
              "forgotten answers: the customer registers three questions again (R-INI-1)"),
    Procedure("unlock-otp", "otp_service", "unlock_otp", "lift the OTP lock (R-RBA-2)"),
    Procedure("reissue-login-password", "identity", "reissue_login_password",
              "forgotten login password: print a one-time temporary one (R-LEG-4)",
              description="Issues a one-time temporary login password (10 half-width letters and "
                          "digits, mixed case), printed once for you to hand over; only its argon2id "
                          "hash is stored. Unlocks the login password and ends the customer's "
                          "sessions. The customer's next login with it can only change it."),
    Procedure("reset-confirmation-password", "identity", "reset_confirmation_password",
              "forgotten confirmation password (PIN reset): print a one-time temporary one (R-LEG-4)",
              description="Resets the confirmation password to a one-time temporary one, printed "
                          "once for you to hand over, and unlocks it. Every transaction or settings "
                          "change is refused until the customer has changed it."),
    Procedure("change-phones", "identity", "change_phones",
              "replace the registered phone numbers (R-LEG-4)", phones=True,
              description="Replaces the registered phone numbers with the --phone numbers given "
                          "(Japanese numbers, any usual notation, normalised to E.164). One invalid "
                          "number refuses the whole change. OTP applications started afterwards "
                          "verify against the new numbers."),
    Procedure("release-otp", "otp_service", "release_tokens_by_operator",
              "lost phone / OTP card: release the customer's active OTP token(s) (R-LEG-4)",
              description="Releases the customer's active OTP token(s) without the OTP. The "
                          "customer then authorises with the mail notification password and may "
                          "apply for a new token."),
    Procedure("initialise-login-id", "identity", "initialise_login_id",
              "reset the login ID to the customer number and unlock its password (R-LEG-4)",
              description="Initialises the login ID: it becomes the customer number again (the "
                          "login ID of every customer today) and the lock of the login password "
                          "(the legacy one before the initial operation) is lifted."),
    Procedure("remove-passkeys", "passkeys", "remove_by_operator",
              "lost device: remove all the customer's biometric logins (passkeys) (R-LEG-4, R-INI-8)",
              description="Removes every biometric login (passkey) of the customer, suspended ones "
                          "too: they can no longer log in. The customer logs in with login ID and "
                          "password and may register a device again (step 10). A re-issue of the "
                          "login password does not remove passkeys; it only stops them until the "
                          "customer has changed the temporary password."),
)


def register(subparsers) -> None:
    op = subparsers.add_parser(
        "operator", help="operator procedures (R-LEG-4): unlock, reset, ...",
        description="Operator procedures of the paper forms (R-LEG-4). Each needs --operator ID "
                    "and --reason TEXT, goes through the owning service by RPC (AMQP_URI) and is "
                    "recorded as an event with the operator as actor and the reason.")
    sub = op.add_subparsers(dest="operator_command", metavar="PROCEDURE", required=True)
    for proc in PROCEDURES:
        p = sub.add_parser(proc.command, help=proc.help,
                           description=proc.description or proc.help.capitalize() + ".")
        p.add_argument("customer", metavar="CUSTOMER_NUMBER")
        if proc.credential:
            p.add_argument("--credential", required=True,
                           help="which credential, e.g. login_password, confirmation_password, "
                                "legacy_password")
        if proc.phones:
            p.add_argument("--phone", dest="phones", action="append", required=True, metavar="NUMBER",
                           help="a new registered number, e.g. 090-1234-5678; repeat for several")
        p.add_argument("--operator", required=True, metavar="ID", help="your operator ID")
        p.add_argument("--reason", required=True, metavar="TEXT", help="why (the paper form's reference)")
        p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
        add_json_flag(p)
        add_debug_flag(p)
        p.set_defaults(func=cmd_procedure, procedure=proc)


def call_service(amqp_uri: str, service: str, method: str, args: list, *, operator: str,
                 reason: str, timeout: float, correlation_id: str):
    from nameko.standalone.rpc import ClusterRpcProxy
    context = {"correlation_id": correlation_id, "actor_kind": "operator", "actor_id": operator,
               "reason": reason, "client_address": "operator-cli"}
    with ClusterRpcProxy({"AMQP_URI": amqp_uri, "serializer": "json"}, context_data=context,
                         timeout=timeout) as rpc:
        return getattr(getattr(rpc, service), method)(*args)


def cmd_procedure(args) -> int:
    from contracts.errors import DomainError
    from services.cli import CommandFailed
    from services.config import Settings

    proc: Procedure = args.procedure
    if not args.operator.strip() or not args.reason.strip():
        raise CommandFailed("--operator and --reason must not be empty", code=2)
    call_args = [args.customer] + ([args.credential] if proc.credential else []) + \
        ([args.phones] if proc.phones else [])
    correlation_id = str(uuid.uuid4())
    try:
        result = call_service(Settings().amqp_uri, proc.service, proc.method, call_args,
                              operator=args.operator, reason=args.reason, timeout=args.timeout,
                              correlation_id=correlation_id)
    except DomainError as exc:
        if args.json:
            emit_json({"ok": False, "procedure": proc.command, "code": exc.code,
                       "detail": exc.detail, "correlation_id": correlation_id})
            return 1
        raise CommandFailed(f"{proc.service}.{proc.method} refused: {exc.code}: {exc.detail}") from None
    if args.json:
        emit_json({"ok": True, "procedure": proc.command, "result": result,
                   "correlation_id": correlation_id})
    else:
        shown = dict(result) if isinstance(result, dict) else result
        temporary = shown.pop("temporary_password", None) if isinstance(shown, dict) else None
        print(f"{proc.command} {args.customer}: done ({shown}); correlation id {correlation_id}")
        if temporary:
            print(f"temporary password (shown once; hand it over, the customer must change it): {temporary}")
    return 0
