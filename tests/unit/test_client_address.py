"""Which address is the customer's behind reverse proxies (gateway/client_address.py): given the
TCP peer, the X-Forwarded-For headers and the trusted proxies, then this address."""
from __future__ import annotations

import pytest

from gateway.client_address import client_address, parse_trusted

TRUSTED = parse_trusted("192.0.2.10, 10.0.0.0/8, 2001:db8:1::/48")


@pytest.mark.parametrize("peer, headers, trusted, expected", [
    # nobody trusted (the default): the peer, whatever the header says
    ("198.51.100.1", ["203.0.113.9"], (), "198.51.100.1"),
    # an untrusted peer: its header is ignored
    ("198.51.100.1", ["203.0.113.9"], TRUSTED, "198.51.100.1"),
    # a trusted proxy with no header: the proxy itself (nothing better is known)
    ("192.0.2.10", [], TRUSTED, "192.0.2.10"),
    ("192.0.2.10", ["203.0.113.9"], TRUSTED, "203.0.113.9"),
    # a client-written prefix is not believed: the right-most address our proxy wrote
    ("192.0.2.10", ["1.1.1.1, 203.0.113.9"], TRUSTED, "203.0.113.9"),
    # two trusted hops, in one header or in two
    ("10.0.0.5", ["203.0.113.9, 192.0.2.10"], TRUSTED, "203.0.113.9"),
    ("10.0.0.5", ["203.0.113.9", "192.0.2.10"], TRUSTED, "203.0.113.9"),
    # every hop trusted: the left-most one
    ("10.0.0.5", ["10.9.9.9, 192.0.2.10"], TRUSTED, "10.9.9.9"),
    # ports and brackets as proxies write them
    ("192.0.2.10", ["203.0.113.9:51234"], TRUSTED, "203.0.113.9"),
    ("192.0.2.10", ["[2001:db8:2::7]:443"], TRUSTED, "2001:db8:2::7"),
    ("2001:db8:1::1", ["2001:db8:2::7"], TRUSTED, "2001:db8:2::7"),
    # garbage from beyond our proxies ends the walk at the last hop we can vouch for
    ("192.0.2.10", ["unknown"], TRUSTED, "192.0.2.10"),
    ("10.0.0.5", ["<script>, 192.0.2.10"], TRUSTED, "192.0.2.10"),
    ("192.0.2.10", [" , "], TRUSTED, "192.0.2.10"),
    # no peer (a unix socket): nothing to walk from
    (None, ["203.0.113.9"], TRUSTED, None),
])
def test_client_address(peer, headers, trusted, expected):
    assert client_address(peer, headers, trusted) == expected


@pytest.mark.parametrize("spec, count", [(None, 0), ("", 0), (" 127.0.0.1 ", 1), ("10.0.0.0/8,::1,", 2),
                                         ("10.1.2.3/8", 1)])
def test_trusted_proxies_are_parsed(spec, count):
    assert len(parse_trusted(spec)) == count


@pytest.mark.parametrize("spec", ["localhost", "10.0.0.0/33", "127.0.0.1;10.0.0.1", "*"])
def test_a_bad_entry_is_refused(spec):
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        parse_trusted(spec)
