"""`tsunagi`: the one command-line tool for operators, auditors and developers.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int`` as the parser default. To add a command,
write the module and append its name to ``COMMANDS``; nothing else changes.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: list[str] = [
    "services.cli.db",
    "services.cli.run",
    "services.cli.service",
    "services.cli.relay",
    "services.cli.verify",
    "services.cli.audit",
    "services.cli.replay",
    "services.cli.operator",
    "services.cli.report",
    "services.cli.smtp_sink",
    "services.cli.import_legacy",
    "services.cli.demo",
    "services.cli.keys",
]


class CommandFailed(Exception):
    """Raise from a command to print a one-line error and exit with ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsunagi",
        description="Operate tsunagi: set up the database, run the system, relay events, "
                    "verify the event log. Configuration comes from environment variables "
                    "(see README.md, 'Configuration').",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from services import nameko_setup
    nameko_setup.install(green=False)   # the operator commands' RPCs publish as the services' do
    try:
        return int(args.func(args) or 0)
    except CommandFailed as exc:
        print(f"tsunagi {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # operational errors (database down, ...): one line, not a trace
        if getattr(args, "debug", False):
            raise
        print(f"tsunagi {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
