"""Mail rendering: a template, its values, recipients → one MIME message (pure, no I/O).

MIME: ``text/plain; charset="utf-8"`` in base64 (Japanese text survives every relay, no
8BITMIME needed); Subject and the From display name RFC 2047-encoded by
``email.policy.SMTP`` (CRLF line ends, folded headers). ``Message-ID`` is derived from the
mail id, which is derived from the event that caused the mail — a retry or a redelivered
event produces the very same message, so a receiving system can tell duplicates apart too.
The ``Date`` is the time the mail was queued, so every attempt renders identical bytes.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

JST = timezone(timedelta(hours=9), "JST")


class TemplateError(Exception):
    """A mail cannot be rendered (unknown template, a missing value): never retried."""


@dataclass(frozen=True)
class Template:
    """One kind of mail. ``sender`` names a configured sender ("otp": otp-auth.net,
    "bank": am-bk.co.jp, R-MAIL-3); ``subject`` and ``body`` are ``str.format`` texts over
    ``params``; every name in ``params_required`` must be given."""
    name: str
    sender: str
    subject: str
    body: str
    params_required: tuple[str, ...] = field(default=())


def mail_id_for(event_id, slot: str = "") -> uuid.UUID:
    """The mail an event causes. One mail per event: the event id itself. Several (one per
    recipient role, e.g. the registered address and select addresses 1 and 2 — next issue):
    a name-based uuid5 of the event id and the slot, stable across redeliveries."""
    event_uuid = event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
    return event_uuid if not slot else uuid.uuid5(event_uuid, slot)


def message_id_for(mail_id, domain: str) -> str:
    return f"<{mail_id}@{domain}>"


def render_text(template: Template, params: dict) -> tuple[str, str]:
    missing = [name for name in template.params_required if params.get(name) in (None, "")]
    if missing:
        raise TemplateError(f"template {template.name} lacks {', '.join(missing)}")
    try:
        return template.subject.format(**params), template.body.format(**params)
    except (KeyError, IndexError, ValueError) as exc:
        raise TemplateError(f"template {template.name}: {type(exc).__name__}") from None


def render(template: Template, params: dict, *, to: list[str] | tuple[str, ...], sender: dict,
           message_id: str, date: datetime) -> EmailMessage:
    subject, body = render_text(template, params)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = Address(display_name=sender.get("display_name") or "", addr_spec=sender["address"])
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date.astimezone(JST))
    msg["Message-ID"] = message_id
    # RFC 3834: a machine wrote this; auto-responders must not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body, subtype="plain", charset="utf-8", cte="base64")
    return msg
