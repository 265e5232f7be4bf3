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
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from services import db
from services.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def main(args):
    from tests import vhosts
    from tests.e2e.conftest import start_system

    if not Path("/usr/bin/chromium").exists():
        print("skipped: /usr/bin/chromium is not installed (python -m tests.setup_machine)")
        return None
    rounds = 3 if args.quick else 10
    settings = Settings()
    tag = uuid.uuid4().hex[:8]
    dbname = vhost = f"tsunagi_bench_web_{tag}"
    db.setup(settings, dbname, log=lambda *_: None)
    vhost_made = vhosts.create(vhost)
    overrides = {"DATABASE_URL": db.url_for(settings.database_url, dbname),
                 "AUDITOR_DATABASE_URL": db.url_for(settings.auditor_database_url, dbname),
                 "AMQP_URI": vhosts.uri_for(settings.amqp_uri, vhost) if vhost_made else settings.amqp_uri}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)                       # System passes os.environ to its children
    system = None
    workdir = Path(tempfile.mkdtemp(prefix="bench_web_"))
    try:
        system = start_system(workdir / "system")
        result_file = workdir / "first_screen.json"
        proc = subprocess.run(
            [sys.executable, "-m", "tests.browser.journey", "--base-url", f"http://localhost:{system.gateway_port}",
             "--mail-dir", str(system.mail_dir), "--out", str(workdir / "shots"), "--result", str(result_file),
             "--legacy-password", "-", "--pin", "-", "--first-screen-only", "--rounds", str(rounds)],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"browser run failed:\n{proc.stderr[-3000:]}")
        measured = json.loads(result_file.read_text())["rounds"]
    finally:
        if system is not None:
            system.terminate()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if vhost_made:
            vhosts.delete(vhost)
        try:
            db.drop_database(settings, dbname)
        except Exception as exc:  # noqa: BLE001
            print(f"(could not drop {dbname}: {exc})")

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
