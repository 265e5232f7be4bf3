"""LOG_LEVEL applies to the services' structlog lines too (README, configuration): below it a
line is dropped before it is rendered; at or above it, it is written as JSON with secrets
masked. Each case runs in a fresh interpreter because the configuration is process-wide."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
from services import logging as tlog
log = tlog.get_logger(service="t")
log.debug("debug_line")
log.info("info_line", customer_number="0123456789")
log.warning("warning_line", password="hunter2")
log.error("error_line")
"""


def _lines(level: str | None) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "LOG_LEVEL"}
    if level is not None:
        env["LOG_LEVEL"] = level
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_default_level_is_info():
    assert [d["event"] for d in _lines(None)] == ["info_line", "warning_line", "error_line"]


def test_warning_drops_info_and_still_masks_secrets():
    lines = _lines("warning")
    assert [d["event"] for d in lines] == ["warning_line", "error_line"]
    assert lines[0]["password"] == "***" and lines[0]["level"] == "warning"


def test_debug_shows_everything_and_nonsense_falls_back_to_info():
    assert [d["event"] for d in _lines("DEBUG")][0] == "debug_line"
    assert [d["event"] for d in _lines("loud")] == ["info_line", "warning_line", "error_line"]
