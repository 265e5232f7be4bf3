"""Two things Nameko 2.14 builds anew for every message, built once per process.

1. **The producer pool's key.** Every publish (an RPC request, its reply, an event) calls
   ``nameko.amqp.publish.get_producer``, which constructs a kombu ``Connection`` only to look
   up kombu's producer pool with it (the pool is keyed by the connection's parameters; the
   object itself never connects). Here one template connection per set of parameters is kept
   and looked up instead. Same pool, same producers, same confirm setting: a publisher with
   confirms and one without still get different templates, because ``confirm_publish`` is
   one of the parameters.
2. **The entrypoint's signature.** Before each call Nameko checks the arguments against the
   method with ``inspect.getcallargs``, which rebuilds the method's signature every time.
   Here the signature is built once per entrypoint and ``bind`` checks the arguments: the
   same refusals (``IncorrectSignature``), wrappers not followed, as ``getcallargs`` does.

Measured here: 79 -> 28 us per publish, 44 -> 6 us per check. Small, and on every RPC: a
login publishes twice (request, reply) and checks once.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager

from kombu import Connection
from kombu.pools import producers
from nameko import extensions
from nameko.amqp import publish
from nameko.constants import DEFAULT_TRANSPORT_OPTIONS
from nameko.exceptions import IncorrectSignature

_templates: dict[tuple, Connection] = {}


@contextmanager
def get_producer(amqp_uri, confirms=True, ssl=None, login_method=None, transport_options=None):
    """``nameko.amqp.publish.get_producer`` without a new ``Connection`` per call."""
    options = dict(DEFAULT_TRANSPORT_OPTIONS if transport_options is None else transport_options)
    options["confirm_publish"] = confirms
    key = (amqp_uri, repr(ssl), login_method, repr(sorted(options.items())))
    template = _templates.get(key)
    if template is None:
        template = _templates.setdefault(key, Connection(
            amqp_uri, transport_options=options, ssl=ssl, login_method=login_method))
    with producers[template].acquire(block=True) as producer:
        yield producer


def check_signature(self, args, kwargs):
    """``Entrypoint.check_signature`` on a signature built once (the method is unbound: its
    ``self`` is given as None, as Nameko does)."""
    signature = self.__dict__.get("_signature")
    if signature is None:
        method = getattr(self.container.service_cls, self.method_name)
        signature = self.__dict__["_signature"] = inspect.signature(method, follow_wrapped=False)
    try:
        signature.bind(None, *args, **kwargs)
    except TypeError as exc:
        raise IncorrectSignature(str(exc)) from None


def install() -> None:
    """Idempotent; for every Nameko process (launcher, command-line tool, tests)."""
    publish.get_producer = get_producer
    extensions.Entrypoint.check_signature = check_signature
