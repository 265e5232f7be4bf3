"""Benchmarks run by `make bench` (`python -m tests.bench`); they print figures, never assert.

The bench process uses real threads, not eventlet, so psycopg's C wait function is the right
one here (the services use `wait_selector` because `wait_c` blocks the eventlet hub). It must
be chosen before psycopg is first imported, which is why it is set in the package itself:
`python -m tests.bench` and `python -m tests.bench.bench_x` both import this file first.
bench_eventstore measures both wait functions side by side in a full run.
"""
import os
import sys

# Only a process that has not chosen yet: a test that imports a bench helper (the replay
# tests use bench_operator's generator) has psycopg already, and wait_c in its environment
# would reach the services of every system it starts afterwards.
# A service the benchmarks launch (tests.bench.bare_rpc, through the service launcher) has been
# given a green one already, and the launcher refuses wait_c: that choice stands too.
if "psycopg" not in sys.modules:
    if "BENCH_PSYCOPG_WAIT_FUNC" in os.environ:
        os.environ["PSYCOPG_WAIT_FUNC"] = os.environ["BENCH_PSYCOPG_WAIT_FUNC"]
    else:
        os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_c")
