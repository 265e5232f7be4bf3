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
if "psycopg" not in sys.modules:
    os.environ["PSYCOPG_WAIT_FUNC"] = os.environ.get("BENCH_PSYCOPG_WAIT_FUNC", "wait_c")
