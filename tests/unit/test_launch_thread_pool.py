"""A launched service hashes on one real thread per CPU (services/cli/_launch.py
thread_pool_size): eventlet's default of 20 threads cost identity ~1 ms of CPU per login."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def pool_size(**environ) -> int:
    # In a process of its own: importing the launcher installs its start-up signal handlers.
    env = {k: v for k, v in os.environ.items() if k != "EVENTLET_THREADPOOL_SIZE"}
    env.update(environ, PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, "-c", "import os, services.cli._launch as l; print(l.thread_pool_size(os.environ))"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_one_thread_per_cpu_by_default():
    assert pool_size() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("configured", ["1", "7"])
def test_an_operator_setting_wins(configured):
    assert pool_size(EVENTLET_THREADPOOL_SIZE=configured) == int(configured)
