"""R-PLT-1: psycopg 3 under eventlet in Nameko services (DESIGN.md, "Nameko under eventlet: known traps").

psycopg's default C wait function blocks the whole eventlet hub, so one slow query stalls every
request of a Nameko process. ``services/__init__.py`` selects ``wait_selector`` before psycopg is
imported. These tests prove queries on separate connections overlap with it, and that the trap
is real without it. (A correctness check of cooperative I/O, not a speed target.)
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import psycopg.waiting

ROOT = Path(__file__).resolve().parents[2]

# Five green threads each sleep 0.5 s in PostgreSQL on their own connection, while a sixth
# counts in pg_stat_activity how many of them are inside the query at the same moment.
PROBE = textwrap.dedent("""
    import time
    import uuid

    import eventlet
    import psycopg

    def overlap(url):
        tag = "green_probe_" + uuid.uuid4().hex
        peak = 0
        def sleeper():
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("SELECT pg_sleep(0.5) /* %s */" % tag)
        def watcher(stop):
            nonlocal peak
            with psycopg.connect(url, autocommit=True) as c:
                while not stop.ready():
                    n = c.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                  "AND query LIKE %s AND pid <> pg_backend_pid()",
                                  ("%" + tag + "%",)).fetchone()[0]
                    peak = max(peak, n)
                    eventlet.sleep(0.02)
        stop = eventlet.event.Event()
        w = eventlet.spawn(watcher, stop)
        started = time.monotonic()
        pool = eventlet.GreenPool()
        for _ in range(5):
            pool.spawn(sleeper)
        pool.waitall()
        elapsed = time.monotonic() - started
        stop.send()
        w.wait()
        return elapsed, peak
""")

namespace: dict = {}
exec(PROBE, namespace)


def test_wait_function_is_selected_by_the_chassis():
    """Importing ``services`` before psycopg is enough; no environment variable needed."""
    env = {k: v for k, v in os.environ.items() if k != "PSYCOPG_WAIT_FUNC"}
    out = subprocess.run(
        [sys.executable, "-c", "import services, psycopg.waiting as w; print(w.wait.__name__)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "wait_selector"
    # This test process then waits with eventlet's own listener, as a launched service does
    # (tests/conftest.py and services/cli/_launch.py install services.green_wait).
    assert psycopg.waiting.wait.__name__ == "wait_green"


def test_concurrent_queries_overlap_under_eventlet(settings):
    """Five concurrent 0.5 s queries are all in flight together and finish in < 1.5 s."""
    elapsed, peak = namespace["overlap"](settings.admin_database_url)
    assert peak == 5
    assert elapsed < 1.5


def test_c_wait_function_serialises_green_threads(settings):
    """The trap: with psycopg's C wait function the same five queries run one after another."""
    script = "import eventlet\neventlet.monkey_patch()\n" + PROBE + textwrap.dedent(f"""
        import psycopg.waiting
        assert psycopg.waiting.wait.__name__ == "wait_c"
        elapsed, peak = overlap({settings.admin_database_url!r})
        print(elapsed, peak)
    """)
    env = {**os.environ, "PSYCOPG_WAIT_FUNC": "wait_c", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    elapsed, peak = out.stdout.split()
    assert int(peak) <= 1
    assert float(elapsed) >= 2.4


def test_a_service_never_runs_on_the_blocking_wait_function():
    """A PSYCOPG_WAIT_FUNC=wait_c inherited by a service (a benchmark helper imported by a test
    once set it for the whole test run) made two concurrent OTP applications stall otp_service:
    the one waiting for the customer lock blocked the hub the lock holder needed."""
    env = {**os.environ, "PSYCOPG_WAIT_FUNC": "wait_c", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(
        [sys.executable, "-c", "import services.cli._launch, psycopg.waiting as w; print(w.wait.__name__)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "wait_selector"


def test_importing_a_benchmark_helper_keeps_the_wait_function_of_the_run():
    script = ("import os, psycopg\n"
              "os.environ['PSYCOPG_WAIT_FUNC'] = 'wait_selector'\n"
              "import tests.bench\n"
              "print(os.environ['PSYCOPG_WAIT_FUNC'])")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "wait_selector"


def test_a_launched_service_waits_with_the_hub_and_reuses_what_nameko_rebuilds():
    """What the launcher prepares before a service starts (services/cli/_launch.py prepare,
    services/nameko_setup.py), read back in a process of its own, as a launched service has it."""
    script = ("import services.cli._launch as launch\n"
              "launch.prepare()\n"
              "import psycopg.waiting, nameko.amqp.publish, nameko.extensions, nameko.rpc\n"
              "from nameko.messaging import QueueConsumer\n"
              "from services import amqp_acks\n"
              "print(psycopg.waiting.wait.__name__, nameko.amqp.publish.get_producer.__module__,\n"
              "      nameko.extensions.Entrypoint.check_signature.__module__,\n"
              "      nameko.rpc.Responder.publisher_cls.__module__,\n"
              "      getattr(QueueConsumer, amqp_acks._INSTALLED, False))")
    env = {k: v for k, v in os.environ.items() if k != "PSYCOPG_WAIT_FUNC"}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**env, "PYTHONWARNINGS": "ignore"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["wait_green", "services.nameko_reuse", "services.nameko_reuse",
                                  "services.rpc_delivery", "True"]
