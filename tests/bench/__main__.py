"""`python -m tests.bench [--quick] [--only NAME ...] [--strict]`: run every benchmark module.

A benchmark module is any `tests/bench/bench_*.py` with a `main(args)` function; they run in
name order. `main` gets the parsed arguments (`args.quick`, `args.only`, `args.strict`) and
returns a list of `(target, passed)` pairs, or None when it has no targets.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
import traceback
from pathlib import Path

import tests.bench  # noqa: F401  (chooses psycopg's wait function before psycopg is imported)

# A benchmark runs one system alone: the production pool size, not the test suite's small one.
os.environ.setdefault("DATABASE_POOL_SIZE", "10")

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    """Module names (without the `bench_` prefix) in name order."""
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)])
                  if m.name.startswith("bench_") and not m.ispkg)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer and shorter rounds (the whole run finishes in under a minute)")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this benchmark (e.g. eventstore or bench_eventstore); repeatable")
    p.add_argument("--strict", action="store_true", help="exit 1 if any target is missed")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    names = discover()
    if args.list:
        print("\n".join(names))
        return 0
    wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.only]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; have: {', '.join(names)}", file=sys.stderr)
        return 2
    selected = [n for n in names if not wanted or n in wanted]
    failed: list[str] = []
    missed: list[str] = []
    for name in selected:
        module = importlib.import_module(f"tests.bench.bench_{name}")
        entry = getattr(module, "main", None)
        if not callable(entry):
            continue
        print(f"\n=== bench_{name}{' (quick)' if args.quick else ''} ===", flush=True)
        started = time.perf_counter()
        try:
            outcome = entry(args)
        except Exception:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            continue
        for target, passed in outcome or ():
            if not passed:
                missed.append(f"{name}: {target}")
        print(f"--- bench_{name} took {time.perf_counter() - started:.1f} s", flush=True)
    if missed:
        print("\nmissed targets:\n  " + "\n  ".join(missed))
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
