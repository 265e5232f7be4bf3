"""Database set-up: roles, database, schema files — idempotent, safe to run on every start."""
from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.config import Settings

SQL_DIR = Path(__file__).resolve().parents[1] / "deploy" / "sql"
ROLES = ("tsunagi_service", "auditor")
_SETUP_LOCK = 7031704582


def schema_files() -> list[Path]:
    return sorted(SQL_DIR.glob("*.sql"))


def setup(settings: Settings, database: str | None = None, log=print) -> str:
    """Create the roles and the database if missing, then apply every schema file in order."""
    dbname = database or settings.database_name
    with psycopg.connect(settings.admin_database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            for role in ROLES:
                if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                    log(f"created role {role}")
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                log(f"created database {dbname}")
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    target = admin_url_for(settings, dbname)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK,))
        try:
            for path in schema_files():
                conn.execute(path.read_text())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK,))
    log(f"schema applied to {dbname} ({len(schema_files())} files)")
    return dbname


def admin_url_for(settings: Settings, dbname: str) -> str:
    return make_conninfo(settings.admin_database_url, dbname=dbname)


def url_for(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


def drop_database(settings: Settings, dbname: str) -> None:
    with psycopg.connect(settings.admin_database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def dbname_of(url: str) -> str:
    return conninfo_to_dict(url)["dbname"]
