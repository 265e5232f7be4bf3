"""The web front end finishes an operator's paper procedure (SPEC R-LEG-4 with the rules of
R-INI-2) in a real browser: Debian's Chromium driven by Playwright against the whole system,
on a database and vhost of its own (``tests/e2e/isolated.py``).

The journeys are in ``tests/browser/operator_journey.py`` (a process of its own, as in
``test_web_journey.py``); the operator's part is ``tsunagi operator …`` run from there:

- ``reissue-login-password``: the temporary password opens only 「ログインパスワードの変更」;
  after it, the front end goes back to the login screen (the API ends the customer's sessions)
  and only the new password logs in;
- ``reset-confirmation-password``: a transfer confirmed with the temporary confirmation password
  leads to 「確認用パスワードの変更」 and back to the same transfer, accepted with the new one.

Screenshots of every step in ``test-artifacts/screenshots-operator/`` (git-ignored).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.test_web_journey import JOURNEY_TIMEOUT, seed
from tests.e2e.conftest import ROOT
from tests.e2e.isolated import isolated_system
from services.cli import demo

ARTIFACTS = ROOT / "test-artifacts" / "screenshots-operator"
OPERATOR = {"kind": "operator", "id": "op-77"}
REASON = "紙の申請書 2026-204"


@pytest.fixture(scope="module")
def operator_iso(settings, tmp_path_factory):
    with isolated_system(settings, tmp_path_factory.mktemp("opweb")) as iso:
        yield iso


def run_operator_journey(iso, workdir: Path, *extra: str) -> dict:
    system = iso.system
    result_file = workdir / "journey.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    cmd = [sys.executable, "-m", "tests.browser.operator_journey",
           "--base-url", f"http://localhost:{system.gateway_port}", "--mail-dir", str(system.mail_dir),
           "--amqp-uri", iso.amqp_uri, "--out", str(ARTIFACTS), "--result", str(result_file),
           "--legacy-password", demo.LEGACY_PASSWORD, "--pin", demo.LEGACY_PIN, *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOURNEY_TIMEOUT)
    print(proc.stdout)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    assert proc.returncode == 0 and result.get("ok"), (
        f"journey failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n--- system log ---\n{system.log.tail(40)}")
    return result


def test_r_leg_4_customer_finishes_reissue_and_reset_in_chromium(operator_iso, tmp_path):
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    (reissued, *_), (reset, *_) = customers = seed(operator_iso.system, 2)
    result = run_operator_journey(operator_iso, tmp_path, "--reissue", ":".join(customers[0]),
                                  "--reset", ":".join(customers[1]))

    steps = [s["step"] for s in result["steps"]]
    assert steps == ["login_password_reissued", "login_password_change_rules", "login_password_changed",
                     "login_with_new_password", "confirmation_password_reset", "confirmation_password_changed",
                     "transfer_after_reset"], steps

    store = operator_iso.store()
    try:
        # What the browser did is in the log, after the operator's event naming operator and reason.
        events = store.read_stream(f"customer-{reissued}")
        types = [e.type for e in events]
        reissue_at = types.index("login_password_reissued")
        assert events[reissue_at].metadata["actor"] == OPERATOR and events[reissue_at].metadata["reason"] == REASON
        changed = [e for e in events[reissue_at:] if e.type == "login_password_changed"]
        assert [e.data["replaced_temporary"] for e in changed] == [True]
        assert changed[0].metadata["actor"]["kind"] == "customer"

        events = store.read_stream(f"customer-{reset}")
        types = [e.type for e in events]
        reset_at = types.index("confirmation_password_reset")
        assert events[reset_at].metadata["actor"] == OPERATOR and events[reset_at].metadata["reason"] == REASON
        changed = [e for e in events[reset_at:] if e.type == "confirmation_password_changed"]
        assert [e.data["replaced_temporary"] for e in changed] == [True]
        authorization = store.read_stream(f"authorization-{result['authorization_id']}")
        assert [e.type for e in authorization] == ["operation_authorized"]
        assert authorization[0].data["method"] == "mail_otp"
        assert authorization[0].data["operation"]["amount"] == 12000
    finally:
        store.pool.close()

    shots = [Path(p) for p in result["screenshots"]]
    assert len(shots) >= 9 and all(p.stat().st_size > 5000 for p in shots)
    print(f"\nscreenshots: {ARTIFACTS} ({len(shots)} files)")
