"""The customer's address when the gateway stands behind reverse proxies (``TRUSTED_PROXIES``).

The address is what the rate limits count (gateway/ratelimit.py) and part of a login's
environment for the risk-based step-up (identity/domain/environment.py). Behind a
TLS-terminating proxy the TCP peer is always the proxy, so every customer would share one limit
and one "environment". ``X-Forwarded-For`` names the real client, but anyone can send that
header, so it is believed only as far as proxies of ours wrote it: the chain is read from the
right (the entry the nearest proxy appended) and the first address that is not one of ours is
the client. An entry that is not an address ends the walk at the last hop we can vouch for.

``TRUSTED_PROXIES``: comma-separated addresses or networks, e.g. ``10.0.0.0/8, 192.0.2.7``.
Unset (the default): no proxy is trusted and the address is the TCP peer, header or not.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted(spec: str | None) -> tuple[Network, ...]:
    """Raises ValueError naming the bad entry: a typo must stop the gateway's start, not
    quietly trust nobody (or everybody)."""
    if not spec:
        return ()
    networks = []
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"TRUSTED_PROXIES: {entry!r} is not an address or network") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address as proxies write it: bare, ``[v6]`` or ``[v6]:port``, or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str | None:
    """``peer``: the TCP peer; ``forwarded_for``: every ``X-Forwarded-For`` header, in order."""
    if not trusted or peer is None:
        return peer
    current = _address(peer)
    if current is None:
        return peer
    chain = [entry for header in forwarded_for for entry in header.split(",")]
    while chain and any(current in network for network in trusted):
        claimed = _address(chain.pop())
        if claimed is None:
            break
        current = claimed
    return str(current)
