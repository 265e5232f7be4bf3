"""What an "environment" is for risk-based authentication (R-RBA-1). Pure.

The guide: the bank "analyses the PC and network environment" and asks a secret question when
the access looks different from usual. We key an environment as follows:

- With a device id (the app / web front end sends ``X-Device-ID``, a random id it keeps in the
  device): the environment is that device. A new device is a new environment, even on the
  customer's home network.
- Without one (a plain browser): the network and the browser — the IPv4 /24 (IPv6 /48) the
  request came from plus the browser family and the operating-system family from the user
  agent. Versions are left out on purpose: a browser update must not trigger a challenge,
  a different browser or another network must.

Only a SHA-256 of the canonical description is stored ("environment key"), never the raw
address or device id, so the event log holds no browsing history. The key is low-entropy for
the network variant; that is acceptable because it is not a secret, only a "seen before" mark.
"""
from __future__ import annotations

import hashlib
import ipaddress
import re

from identity.domain.inputs import ClientInfo

_BROWSERS = (  # order matters: Edge and Opera also say "Chrome", Chrome also says "Safari"
    ("edge", re.compile(r"\bEdg(e|A|iOS)?/")),
    ("opera", re.compile(r"\bOPR/|\bOpera\b")),
    ("samsung", re.compile(r"\bSamsungBrowser/")),
    ("firefox", re.compile(r"\bFirefox/|\bFxiOS/")),
    ("chrome", re.compile(r"\bChrome/|\bCriOS/")),
    ("safari", re.compile(r"\bSafari/")),
)
_SYSTEMS = (
    ("ios", re.compile(r"iPhone|iPad|iPod")),
    ("android", re.compile(r"Android")),
    ("windows", re.compile(r"Windows")),
    ("macos", re.compile(r"Mac OS X|Macintosh")),
    ("linux", re.compile(r"Linux|X11")),
)


def browser_family(user_agent: str | None) -> str:
    ua = user_agent or ""
    browser = next((name for name, rx in _BROWSERS if rx.search(ua)), "other")
    system = next((name for name, rx in _SYSTEMS if rx.search(ua)), "other")
    return f"{browser}/{system}"


def network_of(address: str | None) -> str:
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def describe(client: ClientInfo) -> str:
    if client.device_id:
        return f"device:{client.device_id}"
    return f"network:{network_of(client.address)}|browser:{browser_family(client.user_agent)}"


def environment_key(client: ClientInfo) -> str:
    return hashlib.sha256(describe(client).encode()).hexdigest()[:32]
