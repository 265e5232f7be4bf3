"""A broker that closes the connection while an ack is written must not kill the service
(services/amqp_acks.py; found by the slow soak during broker restarts)."""
from types import SimpleNamespace

import pytest
from nameko.messaging import QueueConsumer

from services import amqp_acks


class CutOffMessage:
    """A delivered message whose connection the broker closes as the ack is written."""

    def __init__(self, error: Exception):
        self.channel = SimpleNamespace(connection=object())   # still looks alive
        self.error = error

    def ack(self):
        raise self.error

    def requeue(self):
        raise self.error


@pytest.mark.parametrize("error", [ConnectionResetError(104, "Connection reset by peer"),
                                   BrokenPipeError(32, "Broken pipe")])
@pytest.mark.parametrize("method", ["ack_message", "requeue_message"])
def test_a_socket_error_under_an_ack_or_requeue_is_dropped(method, error):
    amqp_acks.install()
    consumer = QueueConsumer()
    # Nameko's own method lets the socket's error out (it only catches amqp's ConnectionError):
    with pytest.raises(type(error)):
        getattr(QueueConsumer, method).__wrapped__(consumer, CutOffMessage(error))
    # guarded, the message is left to the broker, which delivers it again
    assert getattr(consumer, method)(CutOffMessage(error)) is None


def test_other_errors_still_surface():
    amqp_acks.install()
    with pytest.raises(ValueError):
        QueueConsumer().ack_message(CutOffMessage(ValueError("a bug, not a lost connection")))


def test_install_twice_guards_once():
    amqp_acks.install()
    guarded = QueueConsumer.ack_message
    amqp_acks.install()
    assert QueueConsumer.ack_message is guarded
    assert not hasattr(QueueConsumer.ack_message.__wrapped__, "__wrapped__")
