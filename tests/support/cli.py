"""The `tsunagi` command as the tests run it: once to completion, or a service until it is ready."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TSUNAGI = Path(sys.executable).with_name("tsunagi")


def _env(env: dict | None, base: dict | None) -> dict:
    """``env`` over ``base`` (default: this process's environment)."""
    return {**(os.environ if base is None else base), **(env or {})}


def tsunagi(*args: str, env: dict | None = None, base: dict | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(TSUNAGI), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(env, base), cwd=ROOT)


def run_until_ready(service: str, cwd: Path, env: dict | None = None, base: dict | None = None,
                    timeout: float = 60) -> tuple[int, str]:
    """Start `tsunagi service NAME`, stop it (SIGTERM) once it logs that it is ready, or when it
    has printed nothing ready-like for ``timeout`` s; (exit code, everything it printed)."""
    proc = subprocess.Popen([str(TSUNAGI), "service", service], cwd=cwd, env=_env(env, base),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if f"ready: {service}" in line or time.monotonic() > deadline:
                proc.terminate()
                break
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines) + out
