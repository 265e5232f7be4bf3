"""Configuration from environment variables, with defaults that work on a developer machine."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

from services.deployment import DEV_FIELD_KEYS


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    amqp_uri: str = field(default_factory=lambda: _env("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672//"))
    # The services connect with a role that can only append to the log.
    database_url: str = field(default_factory=lambda: _env(
        "DATABASE_URL", "postgresql://tsunagi_service@127.0.0.1:5432/tsunagi"))
    # Schema set-up (roles, database, triggers) needs a superuser.
    admin_database_url: str = field(default_factory=lambda: _env(
        "ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    auditor_database_url: str = field(default_factory=lambda: _env(
        "AUDITOR_DATABASE_URL", "postgresql://auditor@127.0.0.1:5432/tsunagi"))
    gateway_address: str = field(default_factory=lambda: _env("GATEWAY_ADDRESS", "127.0.0.1:8000"))
    smtp_host: str | None = field(default_factory=lambda: os.environ.get("SMTP_HOST") or None)
    smtp_port: int | None = field(default_factory=lambda: int(os.environ["SMTP_PORT"]) if os.environ.get("SMTP_PORT") else None)
    # "kid:base64key,kid:base64key"; the first is used for new data keys, all can unwrap.
    field_keys: str = field(default_factory=lambda: _env(
        "FIELD_KEYS", DEV_FIELD_KEYS))
    cutover_at: datetime = field(default_factory=lambda: datetime.fromisoformat(
        _env("CUTOVER_AT", "2025-01-05T07:00:00+09:00")))
    rpc_timeout: float = field(default_factory=lambda: float(_env("RPC_TIMEOUT", "10")))
    # Connections per service process at most. Every process of every instance holds up to
    # this many, so processes × pool size must stay below PostgreSQL's max_connections.
    database_pool_size: int = field(default_factory=lambda: int(_env("DATABASE_POOL_SIZE", "10")))

    @property
    def database_name(self) -> str:
        from psycopg.conninfo import conninfo_to_dict
        return conninfo_to_dict(self.database_url)["dbname"]

    def nameko_config(self) -> dict:
        return {
            "AMQP_URI": self.amqp_uri,
            "WEB_SERVER_ADDRESS": self.gateway_address,
            "max_workers": int(_env("MAX_WORKERS", "20")),
            "parent_calls_tracked": 10,
            "serializer": "json",
        }


def settings() -> Settings:
    return Settings()


class ConfigReader:
    """One setting from Nameko's config, else the environment; empty counts as unset."""

    def __init__(self, config: dict | None = None):
        self.config = config or {}

    def raw(self, key: str) -> str | None:
        value = self.config.get(key)
        if value in (None, ""):
            value = os.environ.get(key)
        return None if value in (None, "") else value

    def number(self, key: str, default, fallback: str | None = None, kind=float):
        value = self.raw(key)
        if value is None and fallback:
            value = self.raw(fallback)
        return kind(value) if value is not None else default
