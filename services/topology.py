"""What the running system consists of: the one list of Nameko service modules.

The chassis must not import the service packages (they stand on it, not the other way round),
so the services are named here as module strings; `nameko run` imports them in their own
processes. The runner (`tsunagi run`), the `tsunagi service` command, docker-compose.yml and
the end-to-end tests all start exactly this list.
"""
from __future__ import annotations

import importlib
import pkgutil

# Order matters only for start-up output: the gateway last, so it answers /health once the
# services it pings are on their way up.
SERVICE_MODULES: list[str] = [
    "identity.service",
    "identity.secret_questions",
    "identity.passkeys",
    "otp_service.service",
    "phone_auth.service",
    "notifier.service",
    "gateway.service",
]


def service_name(module: str) -> str:
    """The short name a person uses for a service module: its Nameko service name by convention.

    ``identity.service`` → ``identity``; ``identity.secret_questions`` → ``secret_questions``.
    """
    package, _, leaf = module.rpartition(".")
    return package.rpartition(".")[2] if leaf == "service" else leaf


def service_names() -> list[str]:
    return [service_name(m) for m in SERVICE_MODULES]


def module_for(name: str) -> str:
    """Resolve a short name (or a module string) to a module of SERVICE_MODULES."""
    for module in SERVICE_MODULES:
        if name in (module, service_name(module)):
            return module
    raise KeyError(f"unknown service {name!r}; known: {', '.join(service_names())}")


def load_contracts() -> list[str]:
    """Import every module of ``contracts`` so the event registry and the subscription list are
    complete in processes that import no service (the relay declares queues and picks each
    event's exchange from them)."""
    import contracts

    loaded = []
    for info in pkgutil.walk_packages(contracts.__path__, prefix="contracts."):
        importlib.import_module(info.name)
        loaded.append(info.name)
    return loaded
