"""`tsunagi verify`: recompute the event log's hash chain and name the first broken position.

`--checkpoint` also prints a signed head (services/eventstore/checkpoint.py) for an auditor to
keep outside the database; `--against FILE` proves the log still extends such a head, which
catches a cut or rewritten tail that leaves a shorter, internally consistent chain.
"""
from __future__ import annotations

import json
import os
import sys

from services.cli._common import add_debug_flag, add_json_flag, emit_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "verify", help="verify the event log's hash chain (exit 1 when broken)",
        description="Recompute every chain link of the global log from --from onwards. Prints "
                    "the number of events checked and the head link; when the chain is broken "
                    "(a row changed, deleted or inserted behind the store's back) prints the "
                    "first broken position and exits 1. --checkpoint prints a signed head "
                    "(HMAC-SHA256, key from AUDIT_CHECKPOINT_KEY) to keep outside the database; "
                    "--against FILE proves the log still extends that head (a cut tail fails).")
    p.add_argument("--from", dest="from_position", type=int, default=1, metavar="N",
                   help="first global position to check (default 1: the whole log)")
    p.add_argument("--checkpoint", action="store_true",
                   help="after a good verification print a signed checkpoint of the head "
                        "(text mode: the checkpoint JSON alone on stdout, the summary on stderr)")
    p.add_argument("--against", metavar="FILE",
                   help="a checkpoint written earlier by --checkpoint: fail unless the log "
                        "still contains that head unchanged and extends it")
    add_json_flag(p)
    add_debug_flag(p)
    p.set_defaults(func=cmd_verify)


def _key() -> bytes:
    from services.eventstore.checkpoint import KEY_ENV
    return os.environ.get(KEY_ENV, "").encode()


def _load_checkpoint(path: str):
    from services.cli import CommandFailed
    from services.eventstore import checkpoint as cp

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return cp.check(json.loads(text), _key())
    except OSError as exc:
        raise CommandFailed(f"cannot read checkpoint {path}: {exc.strerror}", code=2) from None
    except json.JSONDecodeError as exc:
        raise CommandFailed(f"checkpoint {path} is not JSON: {exc}", code=2) from None
    except cp.CheckpointError as exc:
        raise CommandFailed(f"checkpoint {path}: {exc}", code=1) from None


def cmd_verify(args) -> int:
    from services.cli import CommandFailed
    from services.cli._common import open_store_checked
    from services.eventstore import checkpoint as cp

    if args.from_position < 1:
        raise CommandFailed("--from must be a global position (1 or more)", code=2)
    if args.checkpoint and not _key():
        raise CommandFailed(f"--checkpoint needs a signing key in {cp.KEY_ENV}", code=2)
    against = _load_checkpoint(args.against) if args.against else None
    from_position = args.from_position
    if against is not None:
        # Everything after the checkpointed head must be re-linked from it.
        from_position = min(from_position, against[0] + 1)
    store = open_store_checked()
    try:
        result = store.verify(from_position)
        extends = None
        if against is not None:
            position, link = against
            with store.pool.connection() as c:
                found = cp.link_at(c, position) if position > 0 else ""
            if found is None:
                extends = (False, f"log ends before the checkpoint's position {position} "
                                  f"(tail cut: head is {result.head_position if result.ok else 'unknown'})")
            elif found != link:
                extends = (False, f"link at position {position} differs from the checkpoint "
                                  f"(the log was rewritten)")
            else:
                extends = (True, None)
    finally:
        store.pool.close()
    ok = result.ok and (extends is None or extends[0])
    signed = cp.sign(result.head_position, result.head_link, _key()) if (args.checkpoint and ok) else None
    if args.json:
        out = {"ok": ok, "checked": result.checked, "from": from_position,
               "head_position": result.head_position, "head_link": result.head_link,
               "first_broken": result.first_broken, "reason": result.reason}
        if against is not None:
            out["against"] = {"position": against[0], "link": against[1],
                              "extends": extends[0], "reason": extends[1]}
        if args.checkpoint:
            out["checkpoint"] = signed
        emit_json(out)
        return 0 if ok else 1
    summary = sys.stderr if args.checkpoint else sys.stdout
    if result.ok:
        print(f"chain ok: {result.checked} events checked from position {from_position}; "
              f"head {result.head_position} link {result.head_link or '-'}", file=summary)
    else:
        print(f"chain BROKEN at position {result.first_broken}: {result.reason} "
              f"({result.checked} events verified before it)", file=summary)
    if extends is not None:
        if extends[0]:
            print(f"log extends checkpoint at position {against[0]}", file=summary)
        else:
            print(f"checkpoint NOT extended: {extends[1]}", file=summary)
    if signed is not None:
        print(json.dumps(signed, ensure_ascii=False))
    return 0 if ok else 1
