"""A real SMTP server (aiosmtpd) on loopback in a process of its own: it is asyncio, the test
process is eventlet. "The relay is down" is simply that process stopped, "up again" a new one on
the same port."""
from __future__ import annotations

import email
import socket
import subprocess
import sys
from email import policy
from pathlib import Path

from tests.support.net import free_port

# Quick retries, so a test sees a retried mail within its patience.
FAST_MAIL_RETRIES = {"MAIL_RETRY_BASE_SECONDS": 0.2, "MAIL_RETRY_MAX_SECONDS": 1, "MAIL_RETRY_TICK_SECONDS": 0.1}

_SINK = r'''
import asyncio, os, sys, time
from aiosmtpd.controller import Controller

directory, port = sys.argv[1], int(sys.argv[2])

class Sink:
    count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # A relay that refuses a recipient for good (5xx).
        if address.endswith("@refused.example"):
            return "550 5.1.1 <%s>: Recipient address rejected" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        name = "%d-%d-%d.eml" % (time.time_ns(), os.getpid(), Sink.count)
        head = ("X-Envelope-From: %s\r\nX-Envelope-To: %s\r\n"
                % (envelope.mail_from, ",".join(envelope.rcpt_tos))).encode()
        tmp = os.path.join(directory, "." + name)
        with open(tmp, "wb") as f:
            f.write(head + envelope.original_content)
        os.rename(tmp, os.path.join(directory, name))      # readers never see half a mail
        # A test that creates HOLD keeps the client waiting for the 250 it is owed: the mail is
        # accepted on disk, the client does not know it yet (for faults in exactly that gap).
        while os.path.exists(os.path.join(directory, "HOLD")):
            await asyncio.sleep(0.02)
        return "250 Message accepted for delivery"

controller = Controller(Sink(), hostname="127.0.0.1", port=port)
controller.start()
print("READY", flush=True)
sys.stdin.read()          # until the test closes our stdin
controller.stop()
'''


class SmtpSink:
    """aiosmtpd on 127.0.0.1:<port>, storing each mail as one file (envelope on top)."""

    def __init__(self, directory: str, port: int | None = None):
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "SmtpSink":
        self.proc = subprocess.Popen([sys.executable, "-c", _SINK, self.directory, str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", f"SMTP sink did not start: {line!r}"
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        # Nothing listens any more: a connection is refused.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", self.port)) != 0

    def messages(self) -> list[email.message.EmailMessage]:
        out = []
        for path in sorted(Path(self.directory).glob("[!.]*.eml")):
            out.append(email.message_from_bytes(path.read_bytes(), policy=policy.default))
        return out

    def hold_replies(self, on: bool) -> None:
        """While on, each mail is stored and the client waits for its 250."""
        hold = Path(self.directory) / "HOLD"
        if on:
            hold.touch()
        else:
            hold.unlink(missing_ok=True)

    def with_message_id(self, message_id: str) -> list:
        return [m for m in self.messages() if m["Message-ID"] == message_id]
