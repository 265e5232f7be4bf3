"""Run one Nameko service module: `python -m services.cli._launch MODULE [--config FILE]`.

This is `nameko run --config FILE MODULE` with two differences that matter here:
- only the classes *defined in* MODULE are services. `nameko run MODULE` takes every class in
  the module's namespace that has entrypoints, so a service that imports a mixin
  (`PingMixin`, the gateway's route mixins) fails to start ("must define a `name`");
- a start-up failure exits non-zero (`nameko run` prints "Error: ..." and exits 0, which
  would hide a broken service from the runner and from docker);
- SIGTERM/SIGINT during start-up is held until the service has started, then it stops
  gracefully. (Nameko stops a consumer that is still starting by killing its greenthread
  with an exception instance, which eventlet 0.41 turns into IndexError and a crash.)
- "ready" is logged once every entrypoint consumes, which the runner and tests can wait for.
Eventlet patches the standard library before anything else is imported, as `nameko run` does.
- psycopg's wait function is always a green one, whatever the environment says, and once
  the service runs it is eventlet's own listener (services/green_wait.py);
- eventlet's tpool has one thread per CPU, RPC messages are transient (services/rpc_delivery.py),
  what Nameko builds per message is built once (services/nameko_reuse.py), and a broker cut
  during an ack does not end the process (services/amqp_acks.py).
"""
import os
import signal
import warnings

# A service runs on eventlet: psycopg's C wait function (wait_c) would block the whole hub on
# every query, and a query waiting for a lock would stall the process for good (the holder
# can never receive the RPC reply it waits for). An inherited PSYCOPG_WAIT_FUNC=wait_c, e.g.
# a benchmark's choice leaking through the environment, must not reach a service. psycopg reads
# the variable when it is first imported, which has not happened yet here.
_GREEN_WAITS = ("wait_selector", "wait_select")
if os.environ.get("PSYCOPG_WAIT_FUNC") not in _GREEN_WAITS:
    os.environ["PSYCOPG_WAIT_FUNC"] = "wait_selector"


def _stop_before_start(signum, _frame):
    # Asked to stop while still importing: nothing has started, so there is nothing to undo.
    raise SystemExit(0)


signal.signal(signal.SIGTERM, _stop_before_start)
signal.signal(signal.SIGINT, _stop_before_start)

# Eventlet's deprecation notice (nine lines per process on every start) tells us nothing new:
# DESIGN.md fixes Nameko 2.14 on eventlet.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

eventlet.monkey_patch()

from eventlet import tpool  # noqa: E402

import argparse  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import errno  # noqa: E402
import logging.config  # noqa: E402
import sys  # noqa: E402

import yaml  # noqa: E402
from nameko.cli.main import setup_yaml_parser  # noqa: E402
from nameko.cli.run import is_entrypoint  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402

log = logging.getLogger("tsunagi.launch")


def services_in(module_name: str) -> list[type]:
    module = importlib.import_module(module_name)
    found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
             if cls.__module__ == module_name and getattr(cls, "name", None)
             and inspect.getmembers(cls, is_entrypoint)]
    if not found:
        raise SystemExit(f"no Nameko service class (with a `name` and entrypoints) is defined "
                         f"in module {module_name!r}")
    return found


def main(argv=None) -> int:
    from services.runner import NAMEKO_CONFIG

    parser = argparse.ArgumentParser(prog="python -m services.cli._launch")
    parser.add_argument("module")
    parser.add_argument("--config", default=str(NAMEKO_CONFIG))
    args = parser.parse_args(argv)
    setup_yaml_parser()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    if "LOGGING" in config:
        logging.config.dictConfig(config["LOGGING"])
    else:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    refuse_development_settings(args.module, config)
    services = services_in(args.module)
    log.info("starting %s from %s", ", ".join(s.name for s in services), args.module)
    run(services, config)
    return 0


def refuse_development_settings(module: str, config: dict) -> None:
    """In production, a development key or switch among the settings this service's package
    reads ends the start (services/deployment.py); elsewhere it is one warning."""
    from services import deployment
    from services.config import ConfigReader
    try:
        deployment.check(module.partition(".")[0], ConfigReader(config).raw)
    except deployment.NotFitForProduction as exc:
        raise SystemExit(f"{module}: {exc}") from None


def thread_pool_size(environ) -> int:
    """Real threads for eventlet's tpool: one per CPU unless EVENTLET_THREADPOOL_SIZE says.

    The services use tpool only for CPU-bound hashing (argon2id, bcrypt, pbkdf2), which gains
    nothing from more threads than cores. Eventlet's default of 20 cost identity ~1 ms of CPU
    per login (login benchmark, perf): the hashes rotated over 20 threads, each with its own
    malloc arena, so every 19 MiB argon2id buffer was mapped afresh (page faults, zeroing)
    and the threads took turns on the cores."""
    configured = environ.get("EVENTLET_THREADPOOL_SIZE")
    if configured:
        return int(configured)
    return max(1, len(os.sched_getaffinity(0)))


def prepare() -> None:
    """What this process needs before a service starts."""
    from services import nameko_setup
    tpool.set_num_threads(thread_pool_size(os.environ))
    import psycopg.waiting
    if psycopg.waiting.wait.__name__ not in (*_GREEN_WAITS, "wait_green"):   # imported too early
        raise SystemExit(f"psycopg chose {psycopg.waiting.wait.__name__}, which blocks eventlet")
    nameko_setup.install(green=True)


def run(services: list[type], config: dict) -> None:
    """nameko.cli.run.run, with stop requests held back until start-up has finished."""
    prepare()
    runner = ServiceRunner(config)
    for cls in services:
        runner.add_service(cls)
    state = {"started": False, "stop_requests": 0}

    def request_stop():
        state["stop_requests"] += 1
        # Signal handlers run in the hub's loop and cannot block: stop in a greenthread.
        eventlet.spawn_n(runner.stop if state["stop_requests"] == 1 else runner.kill)

    def on_signal(signum, _frame):
        if state["started"]:
            request_stop()
        else:
            state["pending"] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.start()
    state["started"] = True
    log.info("ready: %s", ", ".join(s.name for s in services))
    if state.get("pending"):
        request_stop()
    waiter = eventlet.spawn(runner.wait)
    while True:
        try:
            waiter.wait()
            return
        except OSError as exc:   # a signal interrupted the hub's wait (see nameko.cli.run)
            if exc.errno != errno.EINTR:
                raise


if __name__ == "__main__":
    sys.exit(main())
