"""`tsunagi relay`: publish the event log to RabbitMQ until SIGTERM/SIGINT."""
from __future__ import annotations

import signal
import threading


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "relay", help="publish sealed events to RabbitMQ until stopped",
        description="Seal committed events into the global log and publish each one as a "
                    "Nameko event (exchange <service>.events, routing key = event type) with "
                    "publisher confirms, checkpointing the position. Several relays may run: "
                    "one leads (PostgreSQL advisory lock), the others stand by. Stops on "
                    "SIGTERM or SIGINT.")
    p.add_argument("--name", default="relay", help="checkpoint name (default: relay)")
    p.set_defaults(func=cmd_relay)


def cmd_relay(args) -> int:
    from services import logging as tlog
    from services import topology
    from services.config import Settings
    from services.cli._common import open_store_checked
    from services.relay import Relay

    # Know every event type and subscription, though no service is imported here.
    topology.load_contracts()
    settings = Settings()
    stop = threading.Event()
    log = tlog.get_logger(service="relay")

    def _stop(signum, _frame):
        log.info("relay_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    store = open_store_checked(max_size=2)
    try:
        relay = Relay(store, settings.amqp_uri, name=args.name)
        log.info("relay_started", subscriptions=len(relay.subscriptions))
        relay.run(stop)
        log.info("relay_stopped", published=relay.published)
    finally:
        store.pool.close()
    return 0
