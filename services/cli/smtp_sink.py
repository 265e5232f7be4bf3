"""`tsunagi smtp-sink`: a local SMTP server that saves every mail as .eml (development only)."""
from __future__ import annotations

import signal
import threading
from pathlib import Path


def register(subparsers) -> None:
    from services import smtp_sink

    p = subparsers.add_parser(
        "smtp-sink", help="local SMTP sink: save received mail as .eml files",
        description="Listen for SMTP on HOST:PORT (aiosmtpd) and write every received message "
                    "to DIR as an .eml file, logging one masked line per mail. `tsunagi run` "
                    "starts it when SMTP_HOST/SMTP_PORT are not given. Stops on SIGTERM/SIGINT.")
    p.add_argument("--host", default=smtp_sink.DEFAULT_HOST)
    p.add_argument("--port", type=int, default=smtp_sink.DEFAULT_PORT)
    p.add_argument("--dir", type=Path, default=smtp_sink.DEFAULT_DIR,
                   help=f"where .eml files go (default {smtp_sink.DEFAULT_DIR})")
    p.set_defaults(func=cmd_smtp_sink)


def cmd_smtp_sink(args) -> int:
    from services import smtp_sink

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    smtp_sink.serve(args.host, args.port, args.dir, stop)
    return 0
