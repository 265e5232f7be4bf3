"""`tsunagi run`: every service, the relay and (if needed) a local SMTP sink, in the foreground."""
from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run the whole system in the foreground (Ctrl-C stops it)",
        description="Start every Nameko service (services.topology), the relay and, only when "
                    "SMTP_HOST/SMTP_PORT are not set, a local SMTP sink that saves mail under "
                    "RUN_DIR/mail. Output lines are prefixed with the process name. A process "
                    "that exits is reported and not restarted. Ctrl-C or SIGTERM stops every "
                    "process (SIGTERM, grace period, SIGKILL) and exits 0. Run `tsunagi db setup` "
                    "first (`make run` does both).")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="start N processes of every Nameko service (scale-out; default 1)")
    p.add_argument("--run-dir", type=Path, default=Path(".run"),
                   help="where processes.json and the sink's mail go (default .run)")
    p.add_argument("--grace", type=float, default=20.0, metavar="SECONDS",
                   help="how long to wait after SIGTERM before SIGKILL (default 20)")
    p.add_argument("--keep-going", action="store_true",
                   help="keep the rest running when one process exits (default: stop all, exit 1)")
    p.add_argument("--smtp-sink-port", type=int, default=8025, metavar="PORT",
                   help="port of the local SMTP sink on 127.0.0.1 (default 8025)")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from services import runner
    from services.cli import CommandFailed
    from services.cli._common import refuse_development_settings

    if args.instances < 1:
        raise CommandFailed("--instances must be at least 1", code=2)
    # Every child would refuse on its own; one message before anything starts is clearer.
    refuse_development_settings(None)
    return runner.run(instances=args.instances, run_dir=args.run_dir, grace=args.grace,
                      keep_going=args.keep_going, sink_port=args.smtp_sink_port)
