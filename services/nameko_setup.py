"""What every process that runs Nameko code changes in Nameko (and psycopg) before it starts.

One list, so the service launcher (``services/cli/_launch.py``), the command-line tool and
the tests, which run services in-process, cannot drift apart. Each step says why in its own
module; each is idempotent.
"""
from __future__ import annotations


def install(*, green: bool) -> None:
    """``green``: the process runs on eventlet (a service, the tests), so psycopg waits on the
    hub's own listener. The command-line tool is not patched by eventlet and keeps psycopg's."""
    from services import amqp_acks, nameko_reuse, rpc_delivery
    amqp_acks.install()      # a broker restart during an ack must not end the process
    rpc_delivery.install()   # RPC requests and replies are transient
    nameko_reuse.install()   # the producer pool's key and each entrypoint's signature, built once
    if green:
        from services import green_wait
        green_wait.install()  # less CPU per SQL statement
