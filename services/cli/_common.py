"""Helpers shared by the subcommands: JSON output and the common ``--json`` flag."""
from __future__ import annotations

import json
import sys


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def emit_json(data) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def add_debug_flag(parser) -> None:
    parser.add_argument("--debug", action="store_true", help="show a full traceback on errors")


def refuse_development_settings(package: str | None) -> None:
    """services/deployment.py for a command: ``package`` None checks what every process reads.
    Silent outside production: the services warn, and a command's stdout may be JSON."""
    from services import deployment
    from services.config import ConfigReader
    try:
        deployment.check(package, ConfigReader().raw, warn=False)
    except deployment.NotFitForProduction as exc:
        from services.cli import CommandFailed
        raise CommandFailed(str(exc)) from None


def open_store_checked(database_url: str | None = None, max_size: int = 1):
    """Open the event store, failing at once (not after the pool's 15 s) if the database is not
    reachable, with the server's own message."""
    import psycopg

    from services.config import Settings
    from services.eventstore import open_store

    refuse_development_settings("cli")
    settings = Settings()
    url = database_url or settings.database_url
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        from services.cli import CommandFailed
        raise CommandFailed(f"cannot connect to the database: {str(exc).strip()}") from None
    return open_store(settings, database_url=url, max_size=max_size)
