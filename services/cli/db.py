"""`tsunagi db setup`: roles, database and schema, idempotently (safe on every start)."""
from __future__ import annotations


from services.cli._common import add_debug_flag, add_json_flag, emit_json


def register(subparsers) -> None:
    db = subparsers.add_parser("db", help="database administration",
                               description="Database administration.")
    sub = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    setup = sub.add_parser(
        "setup", help="create roles and the database if missing, apply every schema file",
        description="Create the roles tsunagi_service and auditor and the database of "
                    "DATABASE_URL if missing (as ADMIN_DATABASE_URL), then apply "
                    "deploy/sql/*.sql in order. Idempotent: safe to run on every start.")
    setup.add_argument("--database", metavar="NAME",
                       help="database name (default: the one in DATABASE_URL)")
    add_json_flag(setup)
    add_debug_flag(setup)
    setup.set_defaults(func=cmd_setup)


def cmd_setup(args) -> int:
    from services import db
    from services.config import Settings

    settings = Settings()
    messages: list[str] = []
    log = messages.append if args.json else print
    name = db.setup(settings, args.database, log=log)
    if args.json:
        emit_json({"ok": True, "database": name, "schema_files": [p.name for p in db.schema_files()],
                   "messages": messages})
    return 0
