"""psycopg's wait function for processes on eventlet: the hub's own listener, no selector.

psycopg runs every query as a generator that yields what it waits for (read, write or both)
and a wait function that blocks until the socket is ready. Under eventlet the services used
psycopg's ``wait_selector``; with the standard library patched, that builds a green
``SelectSelector`` per query, registers the socket, and each ``select`` schedules a timer
(psycopg's 0.1 s Ctrl-C interval) and a listener, then tears all of it down again. Measured
here (10 green threads, alternated): 166-180 us of client CPU per ``SELECT 1``, against
122-139 us with this function. An OTP check runs five statements in otp_service and one in
the gateway.

This waits with ``eventlet.hubs.trampoline``, as eventlet's own green sockets do: one listener
for the one direction, no timer unless the caller gave a timeout. The rare "read or write"
wait (a statement larger than the socket's send buffer, while the server may be answering)
needs both directions at once, which a trampoline cannot do; it goes through eventlet's green
``select``, as before. A timeout behaves as in psycopg's functions: the generator is told
nothing arrived, then ``psycopg.errors._WaitTimeout`` is raised, which psycopg handles.

No periodic wake-up: psycopg's interval exists to let Ctrl-C and a closed socket interrupt a
wait. A service stops through Nameko, not Ctrl-C, and a socket closed by the server wakes
the listener (libpq then reports the error).
"""
from __future__ import annotations

from time import monotonic

from eventlet.green import select as green_select
from eventlet.hubs import trampoline
from psycopg import errors
from psycopg.waiting import Ready, Wait

_READ, _WRITE, _BOTH = Wait.R, Wait.W, Wait.RW


class _Expired(Exception):
    """The trampoline's timeout; never leaves this module."""


def wait_green(gen, fileno: int, interval: float = 0.0, timeout: float | None = None):
    """psycopg's ``WaitFunc``: run ``gen`` to completion, waiting green on ``fileno``; returns
    what the generator returns. ``interval`` is accepted and not used (see the module)."""
    deadline = None if timeout is None else monotonic() + timeout
    try:
        state = next(gen)
        while True:
            left = None if deadline is None else max(0.0, deadline - monotonic())
            try:
                ready = _ready(fileno, state, left)
            except _Expired:
                gen.send(Ready.NONE)     # let it take what did arrive, as psycopg's own do
                raise errors._WaitTimeout("wait timeout expired") from None
            state = gen.send(ready)
    except StopIteration as done:
        return done.value


def _ready(fileno: int, state, left: float | None):
    if state == _READ:
        trampoline(fileno, read=True, timeout=left, timeout_exc=_Expired)
        return Ready.R
    if state == _WRITE:
        trampoline(fileno, write=True, timeout=left, timeout_exc=_Expired)
        return Ready.W
    if state != _BOTH:
        raise ValueError(f"psycopg asked to wait for {state!r}")
    readable, writable, _ = green_select.select([fileno], [fileno], [], left)
    if not readable and not writable:
        raise _Expired()
    return (Ready.R if readable else Ready.NONE) | (Ready.W if writable else Ready.NONE)


def install() -> None:
    """Every psycopg connection of this process waits with ``wait_green`` (idempotent).

    psycopg's ``Connection.wait`` looks ``psycopg.waiting.wait`` up at each call, so replacing
    it reaches pools and connections made before. Only for processes whose standard library
    eventlet has patched: the Nameko services (the launcher) and the tests that run them."""
    import psycopg.waiting
    psycopg.waiting.wait = wait_green
