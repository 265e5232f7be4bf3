"""structlog JSON logs. Secrets never reach a log: personal values are masked by the caller
with ``mask_email``/``mask_phone`` and known secret keys are dropped here as a safety net."""
from __future__ import annotations

import logging
import os
import sys

import structlog

SECRET_KEYS = {"password", "new_password", "current_password", "answer", "answers", "otp",
               "mail_otp", "secret", "activation_password", "confirmation_password", "code",
               "session_token", "authorization"}


def _drop_secrets(_, __, event_dict):
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS or "password" in key.lower():
            event_dict[key] = "***"
    return event_dict


_configured = False


def configure(level: str | None = None) -> None:
    """``level``: default ``LOG_LEVEL`` (INFO). structlog's own lines below it are dropped
    before any processor runs (no timestamp, no JSON), e.g. per-request lines at WARNING."""
    global _configured
    if _configured:
        return
    level = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    numeric = getattr(logging, level, None)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    logging.basicConfig(format="%(message)s", stream=sys.stdout, level=numeric)
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    _configured = True


def get_logger(**bind):
    configure()
    return structlog.get_logger().bind(**bind)


def mask_email(address: str | None) -> str:
    if not address or "@" not in address:
        return "***"
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str | None) -> str:
    digits = "".join(ch for ch in (number or "") if ch.isdigit())
    return "*****" + digits[-4:] if len(digits) >= 4 else "***"
