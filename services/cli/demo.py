"""`tsunagi demo ...`: demo customers and a telephony simulator for the local demo (issue 8).

- ``tsunagi demo seed`` imports the demo customers of the README through identity's legacy
  import (the same RPC as ``tsunagi import-legacy``). Idempotent: the password verifiers are
  computed with a fixed salt, so a second run finds the same records ("unchanged"). ``make
  run`` starts it next to the system with ``--wait``; ``--fresh N`` adds N new customers with
  random numbers (a customer can do the initial operation once; fresh ones let you walk it
  again) and prints them.
- ``tsunagi demo call --from 090-3141-5901 --to 0120-000-110`` places the call a customer would
  make: a Twilio-style webhook to the gateway, signed with ``TELEPHONY_AUTH_TOKEN`` exactly as
  the provider signs it (there is no phone on a developer's machine).

Never for production: the demo passwords are in the README.
"""
from __future__ import annotations

import base64
import hashlib
import os
import random
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from services.cli._common import add_json_flag, emit_json

LEGACY_PASSWORD = "Demo2025Ab"         # 『みちのくダイレクト』のログインパスワード
LEGACY_PIN = "Pin4821x"                # 確認暗証番号
DEMO_CUSTOMERS = [
    # customer number, registered phone, registered e-mail
    ("9000000001", "090-3141-5901", "demo1@example.jp"),
    ("9000000002", "090-3141-5902", "demo2@example.jp"),
    ("9000000003", "090-3141-5903", "demo3@example.jp"),
    ("9000000004", "090-3141-5904", "demo4@example.jp"),
    ("9000000005", "090-3141-5905", "demo5@example.jp"),
]
_FIXED_SALT = "tsunagi-demo"           # deterministic verifiers: re-seeding is "unchanged"
_ITERATIONS = 1000


def pbkdf2(password: str, salt: str | None = None, iterations: int = _ITERATIONS) -> str:
    """A verifier in the old system's format (``pbkdf2_sha256$iterations$salt$hash``)."""
    salt = salt if salt is not None else base64.b64encode(os.urandom(9)).decode()
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


def legacy_record(number: str, phone: str, email: str, *, password: str = LEGACY_PASSWORD,
                  pin: str = LEGACY_PIN, fixed_salt: bool = True, line: int = 1) -> dict:
    salt = _FIXED_SALT if fixed_salt else None
    return {"line": line, "customer_number": number, "login_password_verifier": pbkdf2(password, salt),
            "confirmation_pin_verifier": pbkdf2(pin, salt), "phones": phone, "email": email}


def fresh_customer() -> tuple[str, str, str]:
    number = f"{random.randrange(10**9, 10**10):010d}"
    digits = f"{random.randrange(10**7, 10**8)}"
    return number, f"090-{digits[:4]}-{digits[4:]}", f"demo-{uuid.uuid4().hex[:10]}@example.jp"


def import_customers(records: list[dict], *, amqp_uri: str | None = None, timeout: float = 60) -> list[dict]:
    from nameko.standalone.rpc import ClusterRpcProxy

    from services.config import Settings
    config = {"AMQP_URI": amqp_uri or Settings().amqp_uri, "serializer": "json"}
    with ClusterRpcProxy(config, timeout=timeout) as rpc:
        return rpc.identity.import_legacy(records)


def gateway_url() -> str:
    from services.config import Settings
    address = getattr(Settings(), "gateway_address", None) or os.environ.get("GATEWAY_ADDRESS") or "127.0.0.1:8000"
    return address if address.startswith("http") else f"http://{address}"


def wait_healthy(base_url: str, timeout: float, *, follow_parent: bool = False) -> bool:
    """Until /health answers 200; False after ``timeout`` or (``follow_parent``) as soon as the
    process that started us is gone (``make run``'s shell after ``tsunagi run`` ended)."""
    deadline = time.monotonic() + timeout
    parent = os.getppid()
    while True:
        if follow_parent and os.getppid() != parent:
            return False
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=5) as r:
                if r.status == 200:
                    return True
        except (OSError, urllib.error.HTTPError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


# ------------------------------------------------------------------ the telephony simulator

def place_call(base_url: str, caller: str, called: str, *, auth_token: str | None = None,
               public_base_url: str | None = None, timeout: float = 30) -> tuple[int, str]:
    """POST the provider's inbound-call webhook, signed as the gateway checks it; returns
    (status, body)."""
    from contracts import telephony
    from gateway.routes_telephony import DEV_AUTH_TOKEN, PATH, twilio_signature

    token = auth_token or os.environ.get("TELEPHONY_AUTH_TOKEN") or DEV_AUTH_TOKEN
    public = public_base_url or os.environ.get("TELEPHONY_PUBLIC_BASE_URL")
    url = base_url.rstrip("/") + PATH
    signed_url = (public.rstrip("/") + PATH) if public else url
    form = {"CallSid": "CA" + uuid.uuid4().hex, "AccountSid": "AC" + "0" * 32,
            "From": telephony.normalize_phone(caller) or caller,
            "To": telephony.normalize_phone(called) or called,
            "CallStatus": "ringing", "Direction": "inbound"}
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": twilio_signature(token, signed_url, form)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


# ------------------------------------------------------------------ the command

def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="demo customers and the telephony simulator (local demo only)",
                              description="Local demonstration helpers; see README, 'Web front end and demo'.")
    sub = p.add_subparsers(dest="demo_command", metavar="SUBCOMMAND", required=True)

    s = sub.add_parser("seed", help="import the demo customers (idempotent)",
                       description="Import the README's demo customers through identity (idempotent); "
                                   "--fresh N adds N new random customers and prints them.")
    s.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                   help="first wait up to SECONDS for the gateway's /health (used by `make run`)")
    s.add_argument("--quiet-unless-ready", action="store_true",
                   help="with --wait: exit quietly (status 0) when the system never came up or its "
                        "starter ended (the background seeding of `make run`)")
    s.add_argument("--fresh", type=int, default=0, metavar="N", help="also create N new random customers")
    s.add_argument("--gateway", default=None, help="gateway base URL (default http://$GATEWAY_ADDRESS)")
    add_json_flag(s)
    s.set_defaults(func=cmd_seed)

    c = sub.add_parser("call", help="place a signed inbound call through the telephony webhook",
                       description="Simulate the customer's call for phone-number verification: "
                                   "POST /telephony/inbound-call signed with TELEPHONY_AUTH_TOKEN.")
    c.add_argument("--from", dest="caller", required=True, metavar="NUMBER",
                   help="the calling number, e.g. 090-3141-5901 (the registered phone)")
    c.add_argument("--to", dest="called", required=True, metavar="NUMBER",
                   help="the toll-free number shown on the phone screen, e.g. 0120-000-110")
    c.add_argument("--gateway", default=None, help="gateway base URL (default http://$GATEWAY_ADDRESS)")
    c.set_defaults(func=cmd_call)


def cmd_seed(args) -> int:
    from services.cli import CommandFailed

    base = args.gateway or gateway_url()
    if args.wait and not wait_healthy(base, args.wait, follow_parent=args.quiet_unless_ready):
        if args.quiet_unless_ready:
            return 0
        raise CommandFailed(f"the system at {base} did not become healthy within {args.wait:g}s")
    records = [legacy_record(n, p, e, line=i + 1) for i, (n, p, e) in enumerate(DEMO_CUSTOMERS)]
    fresh = [fresh_customer() for _ in range(max(args.fresh, 0))]
    records += [legacy_record(n, p, e, fixed_salt=False, line=len(records) + i + 1) for i, (n, p, e) in enumerate(fresh)]
    results = import_customers(records)
    customers = [{"customer_number": r["customer_number"], "phone": r["phones"], "email": r["email"],
                  "status": res.get("status"), "reason": res.get("reason")}
                 for r, res in zip(records, results)]
    bad = [c for c in customers if c["status"] not in ("imported", "unchanged")]
    if args.json:
        emit_json({"login_password": LEGACY_PASSWORD, "confirmation_pin": LEGACY_PIN, "customers": customers})
    else:
        # WebAuthn refuses IP addresses: the page is opened as localhost (README).
        page = base.replace("//127.0.0.1:", "//localhost:").replace("//0.0.0.0:", "//localhost:")
        print(f"demo customers (login password {LEGACY_PASSWORD}, 確認暗証番号 {LEGACY_PIN}); open {page}/")
        for c in customers:
            print(f"  {c['customer_number']}  phone {c['phone']}  mail {c['email']}  {c['status']}"
                  + (f" ({c['reason']})" if c["reason"] else ""))
        sys.stdout.flush()
    if bad:
        raise CommandFailed(f"{len(bad)} demo customer(s) not imported: "
                            + ", ".join(f"{c['customer_number']} {c['reason'] or c['status']}" for c in bad))
    return 0


def cmd_call(args) -> int:
    from services.cli import CommandFailed

    status, body = place_call(args.gateway or gateway_url(), args.caller, args.called)
    if status != 200:
        raise CommandFailed(f"the gateway refused the call: HTTP {status} {body[:300]}")
    print(f"call placed from {args.caller} to {args.called}: the gateway rejected it unanswered, as a provider would")
    return 0

