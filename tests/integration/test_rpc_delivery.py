"""RPC requests and replies cross RabbitMQ as transient messages, and an unknown service is
still detected (services/rpc_delivery.py). Real broker; the messages are caught on queues of
the test's own and their properties read as RabbitMQ delivered them."""
from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue
from nameko.constants import NON_PERSISTENT, PERSISTENT
from nameko.exceptions import RpcTimeout, UnknownService
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from services import rpc_delivery
from tests import vhosts
from tests.support.services import running


class Echo:
    name = "rpc_delivery_echo"

    @rpc
    def echo(self, value):
        return value


@pytest.fixture(scope="module")
def config(settings):
    rpc_delivery.install()      # as conftest and the launcher do; idempotent
    with vhosts.own(settings.amqp_uri, "tsunagi_rpcdelivery_") as amqp_uri:
        cfg = {"AMQP_URI": amqp_uri, "serializer": "json", "max_workers": 4}
        with running(cfg, [Echo]):
            yield cfg


def _get(conn: Connection, queue: Queue, timeout: float = 10.0):
    simple = conn.SimpleQueue(queue, no_ack=True)
    try:
        return simple.get(block=True, timeout=timeout)
    finally:
        simple.close()


def test_a_request_is_published_transient_and_confirmed(config):
    # A queue of the test's own bound like a service's: it receives the proxy's request.
    with Connection(config["AMQP_URI"]) as conn:
        probe = Queue(f"probe-{uuid.uuid4().hex[:8]}", Exchange("nameko-rpc", type="topic", durable=True),
                      routing_key="rpc_delivery_probe.*", auto_delete=True, channel=conn.default_channel)
        probe.declare()
        with ClusterRpcProxy(config, timeout=0.5) as proxy:
            with pytest.raises(RpcTimeout):     # nobody answers: the proxy's own deadline
                proxy.rpc_delivery_probe.anything(1)
        message = _get(conn, probe)
        assert message.payload["args"] == [1]
        assert message.properties["delivery_mode"] == NON_PERSISTENT


def test_a_reply_is_published_transient(config):
    with Connection(config["AMQP_URI"]) as conn:
        replies = Queue(f"replies-{uuid.uuid4().hex[:8]}", Exchange("nameko-rpc", type="topic", durable=True),
                        routing_key=f"reply-{uuid.uuid4().hex}", auto_delete=True, channel=conn.default_channel)
        replies.declare()
        producer = conn.Producer(serializer="json")
        producer.publish({"args": ["hello"], "kwargs": {}}, exchange="nameko-rpc",
                         routing_key="rpc_delivery_echo.echo", reply_to=replies.routing_key,
                         correlation_id="c-1", delivery_mode=PERSISTENT)
        message = _get(conn, replies)
        assert message.payload == {"result": "hello", "error": None}
        assert message.properties["delivery_mode"] == NON_PERSISTENT


def test_an_unknown_service_is_still_detected_through_the_request_confirm(config):
    with ClusterRpcProxy(config, timeout=10) as proxy:
        assert proxy.rpc_delivery_echo.echo("round trip") == "round trip"
        with pytest.raises(UnknownService):
            proxy.no_such_service_here.anything()
