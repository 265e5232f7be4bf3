"""RPC with a deadline, for the gateway and for services that call each other.

Nameko 2.14's proxies wait for a reply forever; a customer's request must not. Every call
goes through ``rpc_call``, so a slow, stopped or unknown service becomes a 503
``service_unavailable`` problem instead of a hung connection.
"""
from __future__ import annotations

import dataclasses
import socket

import eventlet
from kombu.exceptions import OperationalError
from nameko.exceptions import RemoteError, UnknownService

from contracts.errors import Unavailable
from services import logging as tlog
from services.config import Settings


# Exception class names (as RemoteError carries them) that mean "the database went away".
DATABASE_UNAVAILABLE = frozenset({
    "OperationalError", "AdminShutdown", "CrashShutdown", "CannotConnectNow", "InterfaceError",
    "PoolTimeout", "PoolClosed", "TooManyConnections", "ConnectionTimeout", "ConnectionFailure"})


# Settings' own reading of RPC_TIMEOUT, run per call (the environment may change): building
# the whole Settings for every RPC parsed a dozen variables each time.
_RPC_TIMEOUT = next(f for f in dataclasses.fields(Settings) if f.name == "rpc_timeout").default_factory


def default_timeout() -> float:
    return _RPC_TIMEOUT()


def rpc_call(proxy_method, *args, timeout: float | None = None, **kwargs):
    """Call a Nameko RPC proxy method (``self.identity.login``) and return its result.

    Raises ``contracts.errors.Unavailable`` when no reply arrives within ``timeout``
    seconds (default ``RPC_TIMEOUT``), when no instance of the service has ever declared its
    queue, or when the broker cannot be reached. Domain errors raised by the service pass
    through unchanged (they cross RPC as their own classes).
    """
    if timeout is None:
        timeout = default_timeout()
    service = getattr(proxy_method, "service_name", "?")
    method = getattr(proxy_method, "method_name", getattr(proxy_method, "__name__", "?"))
    timer = eventlet.Timeout(timeout)
    try:
        return proxy_method(*args, **kwargs)
    except eventlet.Timeout as exc:
        if exc is not timer:  # somebody else's deadline: not ours to translate
            raise
        _log_unavailable(proxy_method, service, method, "timeout", timeout)
        raise Unavailable() from None
    except UnknownService:
        _log_unavailable(proxy_method, service, method, "unknown_service", timeout)
        raise Unavailable() from None
    except (OperationalError, ConnectionError, socket.error) as exc:
        _log_unavailable(proxy_method, service, method, f"broker: {type(exc).__name__}", timeout)
        raise Unavailable() from None
    except RemoteError as exc:
        # The service lost its database (restart, killed backends): a transient outage the
        # customer may retry (every command is safe to repeat) — a 503, not an internal error.
        if exc.exc_type not in DATABASE_UNAVAILABLE:
            raise
        _log_unavailable(proxy_method, service, method, f"database: {exc.exc_type}", timeout)
        raise Unavailable() from None
    finally:
        timer.cancel()


def _log_unavailable(proxy_method, service: str, method: str, reason: str, timeout: float) -> None:
    # The customer only sees service_unavailable; which service failed is for operators.
    worker_ctx = getattr(proxy_method, "worker_ctx", None)
    correlation_id = worker_ctx.context_data.get("correlation_id") if worker_ctx else None
    tlog.get_logger(correlation_id=correlation_id).warning(
        "rpc_unavailable", target=f"{service}.{method}", reason=reason, timeout_s=timeout)
