"""Scale-out (issue 7 item 6) and the call window (issue 4: late call, expired verification),
end to end against a system of this module's own: ``tsunagi run --instances 2`` — two
processes of every service on one RabbitMQ vhost and one database of its own
(``tests/e2e/isolated.py``) — with a 5-second call window (``PHONE_VERIFICATION_SECONDS=5``).

Scale-out: complete initial operations (legacy login → secret questions → passwords → OTP
application → the signed call → token mail → activation → login with the OTP → passkey
registration and passkey login) run several at a time. Afterwards: every flow ended as on one
instance (the same event kinds per stream as the same flow on the single-instance `system`);
both processes of every service did some of the work (competing consumers on the RPC and
event queues, the gateway's port shared with SO_REUSEPORT: the workers each process's own
DEBUG lines show it spawned);
no duplicate effects (one token mail per issuance, one event per command); and with a second
relay started by hand, still one relay publishes (the leader lock) and nothing arrives twice.

Call window: nobody calls → phone_auth's timer (on two instances, rows claimed with SKIP
LOCKED) expires the verification exactly once by itself, the page's long poll says
``expired``; the registered phone calling afterwards verifies nothing; the customer applies
again and gets the token.
"""
from __future__ import annotations

import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyotp
import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services import runner as runner_mod
from services import topology
from services.config import Settings
from tests.e2e.conftest import ROOT
from tests.e2e.isolated import isolated_system
from tests.e2e.test_initial_operation_full import (ACTIVATION_PASSWORD, SUBJECT, OtpCustomer, activate, apply,
                                                   call, call_and_wait_issued, called_number, events_of, login,
                                                   migrate, random_mobile, status, token_mail)
from tests.e2e.test_initial_operation_steps_2_4 import (LEGACY_PASSWORD, LEGACY_PIN, NEW_CONFIRMATION, Api,
                                                        new_number, pbkdf2)
from tests.integration.webauthn_soft import SoftAuthenticator

# This module starts a second whole system (15 processes): on a loaded 2-core machine its
# start-up alone can take a minute, so the per-test limit is raised for it (not a speed check).
pytestmark = pytest.mark.timeout(300)

INSTANCES = 2
FLOWS = 4
PARALLEL = 2
WINDOW_SECONDS = 5

# Nameko logs every worker it spawns at DEBUG ("spawning <WorkerContext [service.method] …>"):
# with LOG_LEVEL=DEBUG each process's own lines tell which RPC calls, event deliveries and
# HTTP requests it served. The health ping and phone_auth's expiry timer run in every process
# whatever the load, so they do not count as shared work.
SPAWN = re.compile(r"^(?P<name>[a-z_]+(?:\.\d+)?)\s*\| DEBUG nameko\.containers: spawning "
                   r"<WorkerContext \[(?P<service>\w+)\.(?P<method>\w+)\]")
NOT_SHARED_WORK = {"ping", "expire_overdue"}


class Side:
    """One running system and the means to drive it (HTTP, RPC, its event store)."""

    def __init__(self, system, store, amqp_uri: str, database_url: str):
        self.system, self.store, self.database_url = system, store, database_url
        self.api = Api(system.base_url)
        self.amqp_uri = amqp_uri
        self._rpc_lock = threading.Lock()
        self.apis = [self.api]

    def close(self) -> None:
        """Close every keep-alive connection (a stopping gateway waits for open ones)."""
        for api in self.apis:
            api.http.close()

    def customer(self) -> OtpCustomer:
        number = new_number()
        phone, e164 = random_mobile()
        with self._rpc_lock, ClusterRpcProxy({"AMQP_URI": self.amqp_uri, "serializer": "json"}, timeout=60) as rpc:
            [result] = rpc.identity.import_legacy([{
                "line": 1, "customer_number": number, "login_password_verifier": pbkdf2(LEGACY_PASSWORD),
                "confirmation_pin_verifier": pbkdf2(LEGACY_PIN), "phones": phone, "email": ""}])
        assert result["status"] == "imported", result
        c = OtpCustomer(number, self.api, self.store, e164, f"so-{uuid.uuid4().hex[:12]}@example.jp")
        c.api = Api(self.system.base_url)          # a connection pool of its own: another device
        self.apis.append(c.api)
        return c

    def application_row(self, application_id: str) -> tuple[str, str]:
        """(verification_id, status) in otp_service's read model (not the public view)."""
        with self.store.pool.connection() as conn:      # the pool: connections are scarce here
            return conn.execute("SELECT verification_id::text, status FROM otp.applications "
                                "WHERE application_id = %s", (application_id,)).fetchone()


@pytest.fixture(scope="module")
def scaled(settings, tmp_path_factory):
    with isolated_system(settings, tmp_path_factory.mktemp("scale_out"), instances=INSTANCES,
                         env={"PHONE_VERIFICATION_SECONDS": str(WINDOW_SECONDS),
                              "TELEPHONY_RING_DELAY_SECONDS": "0", "LOG_LEVEL": "DEBUG"}) as iso:
        store = iso.store()
        side = Side(iso.system, store, iso.amqp_uri, iso.database_url)
        try:
            yield side
        finally:
            side.close()
            store.pool.close()


# -- one complete flow, and what it left in the log ------------------------------------------------

def passkey_flow(side: Side, c: OtpCustomer, session: str) -> None:
    """Step 10 (R-INI-8): register a passkey with the customer session, then log in with it."""
    authenticator = SoftAuthenticator(f"http://localhost:{side.system.gateway_port}")
    options = c.api.post("/api/v1/webauthn/register/options", {}, token=session, device=c.device)
    assert options.status_code == 200, options.text
    options = options.json()
    r = c.api.post("/api/v1/webauthn/register", {"credential": authenticator.create(options),
                                                 "nickname": "わたしの端末", "challenge_id": options["challenge_id"]},
                   token=session, device=c.device)
    assert r.status_code == 201, r.text
    options = c.api.post("/api/v1/webauthn/login/options", {}, device=c.device)   # discoverable
    assert options.status_code == 200, options.text
    options = options.json()
    r = c.api.post("/api/v1/webauthn/login", {"credential": authenticator.get(options),
                                              "challenge_id": options["challenge_id"]}, device=c.device)
    assert r.status_code == 200 and r.json().get("session_token"), r.text


def complete_flow(side: Side) -> dict:
    """The whole initial operation and the first logins; returns what the flow produced."""
    c = side.customer()
    migrate(c)
    created = apply(c)
    issued = call_and_wait_issued(side.system, c, created)
    mail = token_mail(side.system, c)
    assert issued["user_id"] in mail.get_body(("plain",)).get_content()
    r = activate(c, issued["service_id"], issued["user_id"], app_instance=f"app-{uuid.uuid4().hex}")
    assert r.status_code == 200, r.text
    activated = r.json()
    r = login(c, pyotp.parse_uri(activated["otpauth_uri"]).now())
    assert r.status_code == 200 and r.json().get("session_token"), r.text
    passkey_flow(side, c, r.json()["session_token"])
    return {"customer": c, "application_id": created["application_id"], "token_serial": activated["token_serial"],
            "verification_id": side.application_row(created["application_id"])[0]}


def shape(side: Side, flow: dict) -> dict[str, list[str]]:
    """The event kinds of every stream the flow wrote, by stream category (ids left out)."""
    c = flow["customer"]
    streams = {"customer": f"customer-{c.number}", "secretq": f"secretq-{c.number}",
               "otpapp": f"otpapp-{flow['application_id']}", "otptoken": f"otptoken-{flow['token_serial']}",
               "otpcust": f"otpcust-{c.number}", "phoneverif": f"phoneverif-{flow['verification_id']}"}
    return {category: events_of(side.store, stream) for category, stream in streams.items()}


def instance_work(system) -> dict[str, Counter]:
    """Per process name (``identity.1``, …): the workers it ran, by entrypoint."""
    work: dict[str, Counter] = {}
    for line in system.log.path.read_text(errors="replace").splitlines():
        m = SPAWN.match(line)
        if m and m["method"] not in NOT_SHARED_WORK:
            work.setdefault(m["name"], Counter())[m["method"]] += 1
    return work


def start_second_relay(side: Side, path) -> subprocess.Popen:
    """A second `tsunagi relay` on the same database: it must stand by behind the leader lock."""
    log = open(path, "wb")
    return subprocess.Popen(runner_mod.tsunagi_argv("relay"), env=side.system.env, cwd=ROOT,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=runner_mod._die_with_parent)


# -- the tests ------------------------------------------------------------------------------------------

def test_r_plt_two_instances_of_every_service_share_the_work_with_the_same_results(scaled, system, store,
                                                                                   tmp_path):
    second_relay = start_second_relay(scaled, tmp_path / "relay2.log")
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            flows = list(pool.map(lambda _: complete_flow(scaled), range(FLOWS)))
        second_relay_alive = second_relay.poll() is None
    finally:
        second_relay.terminate()
        second_relay.wait(timeout=30)

    # The same flow on one instance of everything (the session `system`) leaves the same log.
    single = Side(system, store, Settings().amqp_uri, Settings().database_url)
    try:
        reference = shape(single, complete_flow(single))
    finally:
        single.close()
    for flow in flows:
        assert shape(scaled, flow) == reference

    # Both processes of every service did some of the work.
    work = instance_work(scaled.system)
    for service in topology.service_names():
        names = [f"{service}.{i}" for i in range(1, INSTANCES + 1)]
        assert all(sum(work.get(n, Counter()).values()) > 0 for n in names), \
            (service, {n: dict(work.get(n, {})) for n in names})
    assert not set(work) - {f"{s}.{i}" for s in topology.service_names() for i in range(1, INSTANCES + 1)}

    # No duplicate effects: one token mail per issuance, one issuance per application.
    for flow in flows:
        c = flow["customer"]
        mails = [m for m in scaled.system.mailbox.messages if m["To"] == c.email and SUBJECT in str(m["Subject"])]
        assert len(mails) == 1, (c.email, len(mails))
    with scaled.store.pool.connection() as conn:
        twice = conn.execute("SELECT source_event_id, count(*) FROM notifier.outbox GROUP BY 1 "
                             "HAVING count(*) > 1").fetchall()
    assert twice == []
    # One relay led all along: the runner's. The one started by hand stood by.
    text = scaled.system.log.path.read_text(errors="replace")
    assert text.count('"relay_leading"') == 1, text.count('"relay_leading"')
    standby = (tmp_path / "relay2.log").read_text(errors="replace")
    assert second_relay_alive and '"relay_started"' in standby, standby[-2000:]
    assert '"relay_leading"' not in standby


def wait_for_events(store, stream: str, count: int, timeout: float = 30.0):
    """The stream once it holds ``count`` events (the call is handled after the webhook answers)."""
    deadline = time.monotonic() + timeout
    while True:
        events = store.read_stream(stream)
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def wait_expired(c, application_id: str) -> dict:
    """Long-poll until the page would move on by itself (no request other than the poll)."""
    result = status(c, application_id, wait=20)
    while result["status"] == "awaiting_call":        # a long poll may answer at its own limit
        result = status(c, application_id, wait=20)
    return result


def test_r_ini_4_expiry_by_the_timer_then_a_late_call_does_not_verify_and_the_customer_applies_again(scaled):
    side = scaled
    c = side.customer()
    migrate(c)
    created = apply(c)
    app_id = created["application_id"]
    verification_id, _ = side.application_row(app_id)
    # While the verification waits, a second application is refused (one at a time).
    [phone] = c.api.get("/api/v1/me/phones", token=c.token, device=c.device).json()
    r = c.api.post("/api/v1/otp/applications", {
        "email": c.email, "email_confirmation": c.email, "activation_password": ACTIVATION_PASSWORD,
        "activation_password_confirmation": ACTIVATION_PASSWORD, "phone_id": phone["phone_id"],
        "confirmation_password": NEW_CONFIRMATION}, token=c.token, device=c.device)
    assert r.status_code == 409 and r.headers["Content-Type"].startswith("application/problem+json"), r.text
    assert r.json()["code"] == "otp_application_in_progress" and not r.json()["detail"].isascii()

    # Nobody calls: the application becomes `expired` by itself, through the timer's event —
    # once, though two phone_auth instances run the timer.
    result = wait_expired(c, app_id)
    assert result["status"] == "expired" and result["reason"] == "call_timeout", result
    assert "service_id" not in result and "user_id" not in result
    assert events_of(side.store, f"phoneverif-{verification_id}") == [
        "phone_verification_started", "phone_verification_expired"]
    assert events_of(side.store, f"otpapp-{app_id}") == ["otp_application_submitted", "otp_application_expired"]
    assert side.application_row(app_id)[1] == "expired"        # the read model, not the grace rule

    # The registered phone calls the right number after the window: a failed attempt, no token.
    r = call(side.system, c.phone_e164, called_number(created))
    assert r.status_code == 200 and "<Reject" in r.text, r.text
    late = wait_for_events(side.store, f"phoneverif-{verification_id}", 3)
    assert [e.type for e in late] == ["phone_verification_started", "phone_verification_expired",
                                      "phone_verification_attempt_failed"], late
    assert late[-1].data["reason"] == "expired", late[-1].data
    again = status(c, app_id)
    assert again["status"] == "expired" and "user_id" not in again, again
    assert events_of(side.store, f"otpapp-{app_id}") == ["otp_application_submitted", "otp_application_expired"]
    assert not [m for m in side.system.mailbox.messages if m["To"] == c.email]

    # Once expired, the customer may apply again; the call in time issues the token, mailed once.
    retry = apply(c)
    assert retry["application_id"] != app_id
    issued = call_and_wait_issued(side.system, c, retry)
    assert issued["service_id"] and len(issued["user_id"]) == 16, issued
    assert issued["user_id"] in token_mail(side.system, c).get_body(("plain",)).get_content()
    assert len([m for m in side.system.mailbox.messages
                if m["To"] == c.email and SUBJECT in str(m["Subject"])]) == 1
    assert status(c, app_id)["status"] == "expired"                # the old one stays expired
