"""SMTP delivery over smtplib (green under eventlet's monkey patching).

Failures are sorted into transient (no connection, timeouts, 4xx: try again later) and
permanent (5xx: the relay refuses this mail for good). Error texts travel into events and
logs, so any mail address a server echoes back is masked first.
"""
from __future__ import annotations

import re
import smtplib
from email.message import EmailMessage

from services.logging import mask_email

_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool):
        super().__init__(message)
        self.permanent = permanent


def scrub(text: str, limit: int = 300) -> str:
    return _ADDRESS.sub(lambda m: mask_email(m.group(0)), text)[:limit]


def _reply(code, message) -> str:
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return scrub(f"{code} {message}".strip())


def send(message: EmailMessage, *, envelope_from: str, recipients, host: str, port: int,
         timeout: float, starttls: bool = False) -> None:
    """Hand ``message`` to the relay; raise ``DeliveryError`` when it was not accepted."""
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            if starttls:
                smtp.starttls()
            smtp.send_message(message, from_addr=envelope_from, to_addrs=list(recipients))
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        permanent = bool(codes) and all(code >= 500 for code in codes)
        raise DeliveryError(f"recipients refused: {sorted(set(codes))}", permanent) from None
    except smtplib.SMTPConnectError as exc:
        # A relay that turns connections away may be busy or booting: try again later.
        raise DeliveryError(f"connect refused: {_reply(exc.smtp_code, exc.smtp_error)}", False) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"{type(exc).__name__}: {_reply(exc.smtp_code, exc.smtp_error)}",
                            exc.smtp_code >= 500) from None
    except (smtplib.SMTPException, OSError) as exc:     # disconnected, refused, timed out, DNS
        raise DeliveryError(f"{type(exc).__name__}: {scrub(str(exc))}", False) from None
