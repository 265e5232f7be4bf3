"""Loopback ports for servers a test starts."""
from __future__ import annotations

import socket


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the OS picks it; a server binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
