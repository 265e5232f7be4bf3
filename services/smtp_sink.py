"""A local SMTP sink for developers: real SMTP on loopback (aiosmtpd), nothing leaves the machine.

`tsunagi run` starts it only when SMTP_HOST/SMTP_PORT are not given. Each mail received is
written as an ``.eml`` file (the bytes exactly as received) into the mail directory, and one
line is logged with the addresses masked: the directory, not the log, is where a developer
reads a mail's content.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import os
import re
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from services import logging as tlog

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8025
DEFAULT_DIR = Path(".run") / "mail"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60].strip("_") or "mail"


class MailDirHandler:
    """aiosmtpd handler: one .eml file per received message."""

    def __init__(self, directory: Path, log=None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log = log or tlog.get_logger(service="smtp-sink")
        self.received = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        path = self.store(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        self.received += 1
        self.log.info("mail_received",
                      mail_from=tlog.mask_email(envelope.mail_from),
                      rcpt_to=[tlog.mask_email(r) for r in envelope.rcpt_tos],
                      subject=str(msg.get("Subject", "")),
                      message_id=str(msg.get("Message-ID", "")),
                      size=len(raw), file=str(path))
        return "250 Message accepted for delivery"

    def store(self, raw: bytes) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        digest = hashlib.sha256(raw).hexdigest()[:12]
        final = self.directory / f"{stamp}-{digest}.eml"
        # Write then rename, so a reader scanning the directory never sees half a mail.
        tmp = self.directory / f".{final.name}.tmp"
        tmp.write_bytes(raw)
        os.replace(tmp, final)
        return final


def read_mail_dir(directory: Path) -> list[email.message.EmailMessage]:
    """Every .eml in ``directory`` (oldest first), parsed; used by tests and operators."""
    files = sorted(p for p in Path(directory).glob("*.eml"))
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default) for p in files]


class SmtpSink:
    """The aiosmtpd server in a background thread; ``start()``/``stop()``."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 directory: Path = DEFAULT_DIR):
        from aiosmtpd.controller import Controller

        self.handler = MailDirHandler(directory)
        # 8-bit and SMTPUTF8 mail are accepted as a real relay would; size limit like a real MTA.
        self.controller = Controller(self.handler, hostname=host, port=port,
                                     data_size_limit=10 * 1024 * 1024, enable_SMTPUTF8=True)
        self.host, self.port, self.directory = host, port, Path(directory)

    def start(self) -> "SmtpSink":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def serve(host: str, port: int, directory: Path, stop: threading.Event) -> None:
    log = tlog.get_logger(service="smtp-sink")
    # aiosmtpd logs every SMTP command at INFO, addresses in full: keep it to warnings.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    sink = SmtpSink(host, port, directory).start()
    log.info("smtp_sink_listening", host=host, port=port, directory=str(Path(directory).resolve()))
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sink.stop()
        log.info("smtp_sink_stopped", received=sink.handler.received)


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """True once something accepts TCP connections on host:port (start-up ordering only)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
