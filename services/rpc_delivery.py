"""RPC messages are transient; events stay persistent.

Nameko 2.14 publishes every RPC request and reply as a *persistent* message (delivery mode 2)
and waits for a publisher confirm on each. RabbitMQ writes a persistent message on a durable
queue to its message store, and confirms it only once it is safe on disk. An RPC message buys
nothing from that:

- A persistent request matters only across a broker restart. The caller's connection does
  not survive it, and its deadline (``RPC_TIMEOUT``, ``services.rpc``) usually passes before
  the broker is back, so the caller has answered 503. A request redelivered afterwards would
  change state for a customer who was told it failed. Now a restart loses the requests in
  flight, including those a quick restart could still have answered: the callers answer 503
  and the customer retries, which every command is safe for.
- A reply is addressed to one waiting caller. If it is lost, the caller's deadline turns that
  into the same 503. A confirm on the reply cannot help the caller.

So requests are transient, and they keep their confirm: Nameko's ``UnknownService`` (no
queue bound, i.e. the service never started) is detected through ``mandatory`` + confirm.
Replies are transient and unconfirmed. Events (the relay, Kamailio's ``inbound_call``) are
untouched: persistent and confirmed, because they are the system's facts in flight.

Measured on the login benchmark (issue 3): RabbitMQ's CPU per login fell from 1.6 ms to 1.0 ms.
"""
from __future__ import annotations

from nameko import rpc as nameko_rpc
from nameko.amqp.publish import Publisher
from nameko.constants import NON_PERSISTENT


class RequestPublisher(Publisher):
    delivery_mode = NON_PERSISTENT


class ReplyPublisher(Publisher):
    delivery_mode = NON_PERSISTENT
    use_confirms = False


def install() -> None:
    """Idempotent. Every RPC proxy (services, the gateway, the standalone proxies of the
    command-line tool) and every ``@rpc`` reply of this process publishes as above."""
    nameko_rpc.MethodProxy.publisher_cls = RequestPublisher
    nameko_rpc.Responder.publisher_cls = ReplyPublisher
