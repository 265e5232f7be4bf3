"""services/nameko_reuse.py: what Nameko builds per message is built once, with the same
effect. Real broker, real services in-process."""
from __future__ import annotations

import inspect

import pytest
from nameko import extensions
from nameko.amqp import publish
from nameko.exceptions import IncorrectSignature
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy

from services import nameko_reuse
from tests import vhosts
from tests.support.services import running


class Adder:
    name = "nameko_reuse_adder"

    @rpc
    def add(self, a, b=1, *, scale=1):
        return (a + b) * scale


@pytest.fixture(scope="module")
def config(settings):
    with vhosts.own(settings.amqp_uri, "tsunagi_reuse_") as amqp_uri:
        cfg = {"AMQP_URI": amqp_uri, "serializer": "json", "max_workers": 4}
        with running(cfg, [Adder]):
            yield cfg


def test_installed_for_this_process():
    assert publish.get_producer is nameko_reuse.get_producer
    assert extensions.Entrypoint.check_signature is nameko_reuse.check_signature


def test_one_template_connection_per_set_of_parameters(config):
    uri = config["AMQP_URI"]
    before = len(nameko_reuse._templates)
    with nameko_reuse.get_producer(uri, True) as first:
        confirmed_channel = first.channel
    with nameko_reuse.get_producer(uri, True) as again:
        assert again.channel is confirmed_channel          # the same pooled producer
    assert len(nameko_reuse._templates) == before + 1       # and no second template
    with nameko_reuse.get_producer(uri, False) as unconfirmed:
        assert unconfirmed.channel is not confirmed_channel
    assert len(nameko_reuse._templates) == before + 2
    # confirms are part of the key: a publisher without them never gets a confirming producer
    assert first.connection.transport_options["confirm_publish"] is True
    assert unconfirmed.connection.transport_options["confirm_publish"] is False


def test_the_callers_transport_options_are_left_alone(config):
    options = {"max_retries": 3}
    with nameko_reuse.get_producer(config["AMQP_URI"], True, transport_options=options):
        pass
    assert options == {"max_retries": 3}


CALLS = [((1,), {}), ((1, 2), {}), ((1,), {"b": 2}), ((1,), {"scale": 3}), ((), {"a": 1}),
         ((), {}), ((1, 2, 3), {}), ((1,), {"c": 3}), ((1,), {"a": 1}), ((1, 2), {"b": 2})]


@pytest.mark.parametrize("args,kwargs", CALLS)
def test_the_signature_check_refuses_exactly_what_nameko_refuses(args, kwargs):
    """Nameko's own check is ``inspect.getcallargs(method, None, *args, **kwargs)``."""
    try:
        inspect.getcallargs(Adder.add, None, *args, **kwargs)
        nameko_accepts = True
    except TypeError:
        nameko_accepts = False

    class Bound:                      # what check_signature reads from a bound entrypoint
        method_name = "add"

        class container:
            service_cls = Adder

    entrypoint = Bound()
    try:
        nameko_reuse.check_signature(entrypoint, args, kwargs)
        ours_accepts = True
    except IncorrectSignature:
        ours_accepts = False
    assert ours_accepts == nameko_accepts


def test_a_call_with_a_wrong_signature_is_refused_over_rpc(config):
    with ClusterRpcProxy(config, timeout=10) as proxy:
        assert proxy.nameko_reuse_adder.add(2, b=3, scale=2) == 10
        assert proxy.nameko_reuse_adder.add(2) == 3            # twice: the cached signature
        with pytest.raises(IncorrectSignature):            # raised by the service, sent back
            proxy.nameko_reuse_adder.add(1, 2, 3)
        with pytest.raises(IncorrectSignature):
            proxy.nameko_reuse_adder.add()
        assert proxy.nameko_reuse_adder.add(1, b=1) == 2
