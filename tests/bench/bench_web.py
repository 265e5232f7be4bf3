"""Web front end benchmark (issue 8, "Benchmark"): page weight and time to interactive of the
first screen (the login screen), in Debian's Chromium driven by Playwright.

What runs: the whole system as `make run` starts it (the e2e ``System``: every service, the
relay and the gateway that serves the page) on a database and RabbitMQ vhost of their own,
and ``tests/browser/journey.py --first-screen-only`` in a process of its own, with a
smartphone profile (390×844). Each round opens a fresh browser profile (cold cache) at
``http://localhost:<port>/`` and then loads the page again in the same profile (warm: the
assets are cached for a year under their content hash, so only the page travels).

Figures: bytes of the first screen (page, script, style sheet, icon; decoded, and as
transferred — gzip — from Resource Timing), requests, and "interactive": the moment
``app.js`` has attached every handler and shown the first screen (``performance.now()`` at
that point; DOMContentLoaded and load next to it). Medians over the rounds. No target: the
issue asks for the figures.

    python -m tests.bench --only web [--quick]
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from tests.bench.common import whole_system

ROOT = Path(__file__).resolve().parents[2]


def main(args):
    if not Path("/usr/bin/chromium").exists():
        print("skipped: /usr/bin/chromium is not installed (python -m tests.setup_machine)")
        return None
    rounds = 3 if args.quick else 10
    workdir = Path(tempfile.mkdtemp(prefix="bench_web_"))
    with whole_system("web") as system:
        result_file = workdir / "first_screen.json"
        proc = subprocess.run(
            [sys.executable, "-m", "tests.browser.journey", "--base-url", f"http://localhost:{system.gateway_port}",
             "--mail-dir", str(system.mail_dir), "--out", str(workdir / "shots"), "--result", str(result_file),
             "--legacy-password", "-", "--pin", "-", "--first-screen-only", "--rounds", str(rounds)],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"browser run failed:\n{proc.stderr[-3000:]}")
        measured = json.loads(result_file.read_text())["rounds"]

    def med(key, source=None):
        return statistics.median((r if source is None else r[source])[key] for r in measured)

    first = measured[0]
    print(f"first screen (login), {len(measured)} rounds, smartphone profile, medians:")
    print(f"  cold: {first['bytes']:,} bytes decoded in {first['requests']} requests "
          f"({', '.join(urlsplit(u).path for u in first['urls'])}); "
          f"{med('transfer_bytes'):,.0f} bytes transferred (gzip)")
    print(f"  cold: interactive at {med('ready_ms'):.0f} ms; DOMContentLoaded {med('dom_content_loaded_ms'):.0f} ms; "
          f"load {med('load_ms'):.0f} ms")
    print(f"  warm (same profile, assets cached): interactive at {med('ready_ms', 'warm'):.0f} ms; "
          f"{med('transfer_bytes', 'warm'):,.0f} bytes transferred; "
          f"{first['warm']['from_cache']} of {first['warm']['requests'] - 1} assets from the cache")
    return None
