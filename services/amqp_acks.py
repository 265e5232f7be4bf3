"""Acks that cannot kill a service when the broker goes away under them.

Nameko 2.14's ``QueueConsumer.ack_message`` and ``requeue_message`` skip a message whose
connection is already gone and swallow ``amqp.exceptions.ConnectionError``, because the broker
takes back every unacknowledged message of a closed connection by itself. A broker that closes
the connection *while* the ack is being written (``rabbitmqctl stop_app``, a cut) raises the
socket's own ``ConnectionResetError`` / ``BrokenPipeError`` there instead. Those are ``OSError``,
not amqp's ``ConnectionError``, so they escape, the consumer's thread dies, and Nameko kills the
whole container: the service process exits. The slow soak saw identity and secret_questions
exit this way during broker restarts.

The message is safe either way (unacknowledged, so it is delivered again and the handlers are
idempotent). So the socket's errors are treated like amqp's: the ack is dropped and the
consumer reconnects as it already does for a lost connection.
"""
from __future__ import annotations

import functools
import logging

from nameko.messaging import QueueConsumer

log = logging.getLogger(__name__)

_INSTALLED = "_tsunagi_ack_guard"


def _tolerant(method):
    @functools.wraps(method)
    def guarded(self, message):
        try:
            return method(self, message)
        except OSError as exc:
            log.warning("%s dropped: the broker connection closed under it (%s); the broker "
                        "delivers the message again", method.__name__, exc)
            return None
    return guarded


def install() -> None:
    """Idempotent: guard ``QueueConsumer.ack_message`` and ``requeue_message``."""
    if getattr(QueueConsumer, _INSTALLED, False):
        return
    QueueConsumer.ack_message = _tolerant(QueueConsumer.ack_message)
    QueueConsumer.requeue_message = _tolerant(QueueConsumer.requeue_message)
    setattr(QueueConsumer, _INSTALLED, True)
