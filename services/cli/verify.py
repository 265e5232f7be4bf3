"""`tsunagi verify`: recompute the event log's hash chain and name the first broken position."""
from __future__ import annotations

from services.cli._common import add_debug_flag, add_json_flag, emit_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="verify the event log's hash chain (exit 1 when broken)",
        description="Recompute every chain link of the global log from --from onwards. Prints "
                    "the number of events checked and the head link; when the chain is broken "
                    "(a row changed, deleted or inserted behind the store's back) prints the "
                    "first broken position and exits 1.")
    p.add_argument("--from", dest="from_position", type=int, default=1, metavar="N",
                   help="first global position to check (default 1: the whole log)")
    add_json_flag(p)
    add_debug_flag(p)
    p.set_defaults(func=cmd_verify)


def cmd_verify(args) -> int:
    from services.cli import CommandFailed
    from services.cli._common import open_store_checked

    if args.from_position < 1:
        raise CommandFailed("--from must be a global position (1 or more)", code=2)
    store = open_store_checked()
    try:
        result = store.verify(args.from_position)
    finally:
        store.pool.close()
    if args.json:
        emit_json({"ok": result.ok, "checked": result.checked, "from": args.from_position,
                   "head_position": result.head_position, "head_link": result.head_link,
                   "first_broken": result.first_broken, "reason": result.reason})
    elif result.ok:
        print(f"chain ok: {result.checked} events checked from position {args.from_position}; "
              f"head {result.head_position} link {result.head_link or '-'}")
    else:
        print(f"chain BROKEN at position {result.first_broken}: {result.reason} "
              f"({result.checked} events verified before it)")
    return 0 if result.ok else 1
