"""`tsunagi keys status|new-key|rotate`: the field-encryption master keys (FIELD_KEYS).

Personal fields in the log are sealed with a data key per customer; those data keys are kept
wrapped by a master key from ``FIELD_KEYS`` (``kid:base64key,…``, the first is current) and
each row of ``eventstore.subject_keys`` names the master key id that wrapped it. Rotation:

1. ``tsunagi keys new-key --kid k2026`` prints a fresh ``k2026:…`` entry;
2. put it FIRST in FIELD_KEYS, keep the old entries, restart the services: new customers'
   keys are wrapped by k2026, older ones still open with their old master key;
3. ``tsunagi keys rotate`` rewraps every remaining row under the current key (as the database
   owner, ADMIN_DATABASE_URL; safe while the system runs and safe to repeat);
4. when ``tsunagi keys status`` shows no row under an old id, remove it from FIELD_KEYS.

Before the first rotation, copy the first FIELD_KEYS entry into ``WEBAUTHN_USER_HANDLE_KEY``:
the WebAuthn user handles are derived from it, and must not change with the master key
(identity/passkeys.py ``user_handle_key``). Unset, they follow the first FIELD_KEYS entry.

The log itself is never rewritten (it is append-only and hash-chained): the data keys do not
change, only their wrapping. TOTP_KEYS works the same way for TOTP secrets (the sealed secret
carries its kid); those are sealed inside events, so an old TOTP key stays listed while
tokens sealed under it are in use.
"""
from __future__ import annotations

from services.cli._common import add_debug_flag, add_json_flag, emit_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "keys", help="field-encryption master keys: status, new key, rotate",
        description="Rotate the master keys that wrap the per-customer data keys (FIELD_KEYS, "
                    "first entry current). status: subject keys per master key id; new-key: a "
                    "fresh kid:base64 entry to put first in FIELD_KEYS; rotate: rewrap every "
                    "subject key under the current key (needs ADMIN_DATABASE_URL). Exit 1 when "
                    "rows are wrapped by a key id that is not configured.")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="subject keys per master key id")
    add_json_flag(st)
    add_debug_flag(st)
    st.set_defaults(func=cmd_status)
    nk = sub.add_parser("new-key", help="print a fresh kid:base64 master key entry")
    nk.add_argument("--kid", required=True, help="the new key's id (e.g. k2026)")
    nk.set_defaults(func=cmd_new_key)
    rot = sub.add_parser("rotate", help="rewrap every subject key under the current master key")
    rot.add_argument("--batch", type=int, default=500, metavar="N", help="rows per transaction")
    add_json_flag(rot)
    add_debug_flag(rot)
    rot.set_defaults(func=cmd_rotate)


def _keyring_and_conn():
    import psycopg

    from services import crypto, db
    from services.config import Settings
    from services.eventstore.keyring import KeyRing

    settings = Settings()
    ring = KeyRing(crypto.MasterKeys(settings.field_keys))
    # The owner: the services' role may insert and delete key rows but never change one.
    conn = psycopg.connect(db.url_for(settings.admin_database_url, settings.database_name),
                           autocommit=True, connect_timeout=10)
    return ring, conn


def _status(ring, conn) -> dict:
    usage = ring.usage(conn)
    kids = ring.master.kids
    return {"current": ring.master.current_kid, "configured": kids, "subject_keys": usage,
            "not_current": sum(n for k, n in usage.items() if k != ring.master.current_kid),
            "unknown": sorted(k for k in usage if k not in kids)}


def _print(status: dict) -> None:
    print(f"current master key: {status['current']} (configured: {', '.join(status['configured'])})")
    for kid, n in status["subject_keys"].items():
        mark = "current" if kid == status["current"] else ("NOT CONFIGURED" if kid in status["unknown"] else "old")
        print(f"  {kid:<20} {n:>9} subject keys  {mark}")


def cmd_status(args) -> int:
    ring, conn = _keyring_and_conn()
    with conn:
        status = _status(ring, conn)
    if args.json:
        emit_json(status)
    else:
        _print(status)
    return 1 if status["unknown"] else 0


def cmd_new_key(args) -> int:
    from services import crypto
    from services.cli import CommandFailed
    try:
        print(crypto.new_master_key_entry(args.kid))
    except ValueError as exc:
        raise CommandFailed(str(exc), code=2) from None
    return 0


def cmd_rotate(args) -> int:
    ring, conn = _keyring_and_conn()
    with conn:
        rewrapped = ring.rotate(conn, batch=max(1, args.batch))
        status = _status(ring, conn)
    status["rewrapped"] = rewrapped
    if args.json:
        emit_json(status)
    else:
        print(f"rewrapped {rewrapped} subject keys under {status['current']}")
        _print(status)
    return 1 if status["unknown"] else 0
