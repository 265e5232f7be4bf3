"""The web front end in a real browser (issue 8 items 1–3; SPEC R-INI-1…9, R-INI-8 biometric,
R-MAIL-1…5, R-RBA-1): Debian's Chromium driven by Playwright against the whole system started
as `make run` starts it, on a database and vhost of its own (``tests/e2e/isolated.py``, with ``DEMO_MODE=1``).

One journey per customer kind, each in ``tests/browser/journey.py`` (a process of its own —
Playwright's synchronous API cannot run in this eventlet-patched process):

- smartphone: legacy login → secret questions (「確認しました。」 before 「登録を確定する」) →
  password change (a server-side refusal shown next to its field) → OTP application → the
  phone screen (masked number, ``tel:`` link, the 120 s countdown) while the test places the
  call through the signed webhook → the page moves on by itself to the token information →
  the token mail → activation (otpauth URI; the OTP pyotp computes from it) → display name →
  login with the OTP → passkey registration and login with Chromium's virtual authenticator;
- PC: the initial operation without OTP → login from another PC (secret-question step-up) →
  transfer confirmed with the mail notification password read from the SMTP mailbox → a
  Select E-mail change confirmed the same way;
- demo: the phone screen's 「デモ: 登録電話番号から発信する」 (DEMO_MODE=1) moves the page on.

Every step leaves a screenshot in ``test-artifacts/screenshots/`` (git-ignored); the page
weight and time to interactive of the first screen are printed (figures, not assertions).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import demo
from tests.e2e.conftest import ROOT
from tests.e2e.isolated import isolated_system

ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
JOURNEY_TIMEOUT = 240


@pytest.fixture(scope="module")
def web_iso(settings, tmp_path_factory):
    # Its own database and vhost: on the session vhost, the session `system`'s notifier would
    # compete for this system's mail events and send the token mail to the other mailbox.
    # A short ring: the test's webhook call returns sooner (the page moves on before it anyway).
    with isolated_system(settings, tmp_path_factory.mktemp("websystem"),
                         env={"DEMO_MODE": "1", "TELEPHONY_RING_DELAY_SECONDS": "0.3"}) as iso:
        yield iso


@pytest.fixture(scope="module")
def web_system(web_iso):
    return web_iso.system


@pytest.fixture(scope="module")
def web_store(web_iso):
    store = web_iso.store()
    yield store
    store.pool.close()


def seed(system, n: int) -> list[tuple[str, str, str]]:
    customers = [demo.fresh_customer() for _ in range(n)]
    results = demo.import_customers([demo.legacy_record(num, phone, mail, fixed_salt=False, line=i + 1)
                                     for i, (num, phone, mail) in enumerate(customers)],
                                    amqp_uri=system.env["AMQP_URI"])
    assert [r["status"] for r in results] == ["imported"] * n, results
    return customers


def run_journey(system, workdir: Path, out: Path, *extra: str) -> dict:
    result_file = workdir / "journey.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    cmd = [sys.executable, "-m", "tests.browser.journey",
           "--base-url", f"http://localhost:{system.gateway_port}", "--mail-dir", str(system.mail_dir),
           "--out", str(out), "--result", str(result_file),
           "--legacy-password", demo.LEGACY_PASSWORD, "--pin", demo.LEGACY_PIN, *extra]
    if system.env.get("TELEPHONY_AUTH_TOKEN"):
        cmd += ["--auth-token", system.env["TELEPHONY_AUTH_TOKEN"]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=JOURNEY_TIMEOUT)
    print(proc.stdout)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    assert proc.returncode == 0 and result.get("ok"), (
        f"journey failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n--- system log ---\n{system.log.tail(40)}")
    return result


def test_r_ini_1_to_9_and_r_mail_customer_journeys_in_chromium(web_system, web_store, tmp_path):
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    smartphone, pc, demo_customer = seed(web_system, 3)
    result = run_journey(web_system, tmp_path, ARTIFACTS, "--smartphone", ":".join(smartphone),
                         "--pc", ":".join(pc), "--demo-button", ":".join(demo_customer))

    steps = [s["step"] for s in result["steps"]]
    assert steps == ["first_screen", "legacy_login_browser_rule", "legacy_login", "secret_questions",
                     "password_change", "phone_verified", "token_mail", "activated", "display_name",
                     "otp_login", "passkey_registered", "passkey_login", "passkey_removed", "pc_initial_operation",
                     "pc_step_up_login", "pc_transfer_authorized", "pc_select_email", "demo_button_verified"], steps
    # The session cookie as Chromium keeps it on http://localhost: HttpOnly, Strict, Secure.
    assert result["session_cookie"] == {"httpOnly": True, "sameSite": "Strict", "secure": True, "path": "/"}
    assert result["session_cookie_127"] == result["session_cookie"]     # and on http://127.0.0.1
    assert result["demo_button_visible"] is True            # DEMO_MODE=1 in this system
    by_step = {s["step"]: s for s in result["steps"]}
    assert by_step["token_mail"]["sender"].rstrip(">").endswith("otp-auth.net")
    assert by_step["activated"]["issuer"] == "青森みちのく銀行"

    # What the browser did is in the log: the OTP token, the passkey, the authorization.
    number = smartphone[0]
    assert any(e.type.startswith("passkey_registered") for e in web_store.read_stream(f"passkeys-{number}"))
    passkey_events = [e.type for e in web_store.read_stream(f"passkeys-{number}")]
    assert "passkey_login_succeeded" in passkey_events and passkey_events[-1] == "passkey_removed", passkey_events
    authorization = web_store.read_stream(f"authorization-{result['authorization_id']}")
    assert [e.type for e in authorization] == ["operation_authorized"]
    assert authorization[0].data["method"] == "mail_otp"

    shots = [Path(p) for p in result["screenshots"]]
    assert len(shots) >= 20 and all(p.stat().st_size > 5000 for p in shots)
    first = result["first_screen"]
    print(f"\nscreenshots: {ARTIFACTS} ({len(shots)} files)")
    print(f"first screen: {first['bytes']:,} bytes in {first['requests']} requests "
          f"(transfer {first['transfer_bytes']:,} bytes); interactive at {first['ready_ms']} ms, "
          f"DOMContentLoaded {first['dom_content_loaded_ms']} ms, load {first['load_ms']} ms")


def test_demo_seed_is_idempotent_and_lists_the_readme_customers(web_system):
    """`tsunagi demo seed` (what `make run` starts): the README's customers, twice the same."""
    def seed_once() -> dict:
        proc = subprocess.run([sys.executable, "-m", "services.cli", "demo", "seed", "--json", "--wait", "30",
                               "--gateway", web_system.base_url], cwd=ROOT, env=web_system.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    first, second = seed_once(), seed_once()
    numbers = [c["customer_number"] for c in first["customers"]]
    assert numbers == [n for n, _, _ in demo.DEMO_CUSTOMERS]
    assert {c["status"] for c in first["customers"]} <= {"imported", "unchanged"}
    assert {c["status"] for c in second["customers"]} == {"unchanged"}
    readme = (ROOT / "README.md").read_text()
    assert demo.LEGACY_PASSWORD in readme and all(n in readme for n in numbers)


def test_demo_call_route_places_the_call_in_demo_mode(web_system):
    """DEMO_MODE=1: the phone screen's button publishes the customer's call (the refusal with
    demo mode off is in tests/security/test_csrf.py)."""
    import requests
    [(number, phone, _)] = seed(web_system, 1)
    http = requests.Session()
    r = http.post(web_system.base_url + "/api/v1/migration/login",
                  json={"customer_number": number, "password": demo.LEGACY_PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    bearer = {"Authorization": f"Bearer {r.json()['session_token']}"}
    [registered] = http.get(web_system.base_url + "/api/v1/me/phones", headers=bearer, timeout=30).json()
    r = http.post(web_system.base_url + "/api/v1/demo/inbound-call", headers=bearer, timeout=30,
                  json={"phone_id": registered["phone_id"], "call_to": "0120-000-110"})
    assert r.status_code == 202, r.text
    assert r.json()["call_id"].startswith("DEMO")
    r = http.post(web_system.base_url + "/api/v1/demo/inbound-call", headers=bearer, timeout=30,
                  json={"phone_id": "not-a-phone", "call_to": "0120-000-110"})
    assert r.status_code == 404, r.text


def test_demo_call_command_signs_the_webhook_as_the_gateway_checks_it(web_system):
    """`tsunagi demo call`: accepted with the system's telephony token, refused (403) with another."""
    ok = subprocess.run([sys.executable, "-m", "services.cli", "demo", "call", "--from", "090-3141-5901",
                         "--to", "0120-000-110", "--gateway", web_system.base_url],
                        cwd=ROOT, env=web_system.env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "call placed" in ok.stdout, ok.stderr[-1500:]
    # the same signing code with another key: the gateway refuses it
    status, body = demo.place_call(web_system.base_url, "090-3141-5901", "0120-000-110",
                                   auth_token="not-the-providers-token")
    assert status == 403 and "invalid_signature" in body, (status, body)
