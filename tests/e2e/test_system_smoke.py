"""The whole system as `make run` starts it: up, healthy, relaying, and stopping cleanly.

Issue 2 items 2, 6, 9 (README's `make run`; relay publishes the log; /health and /openapi.json).
"""
from __future__ import annotations

import json
import urllib.request
import uuid

import kombu
from contracts.events import Actor, Metadata, NewEvent
from services import topology
from services.eventstore import NO_STREAM
from services.relay import event_exchange
from tests.conftest import unique
from tests.e2e.conftest import _alive, start_system


def test_make_run_system_stops_cleanly_on_sigterm(settings, tmp_path):
    """`tsunagi run` (as `make run` starts it) exits 0 on SIGTERM and leaves no process behind;
    every child stopped by itself within the grace period (none needed SIGKILL)."""
    system = start_system(tmp_path, keep_going=False)
    try:
        state = system.state()
        names = set(state["children"])
        # One process per service of the topology, plus the relay; no sink: SMTP_* were given.
        assert names == {*topology.service_names(), "relay"}
        assert state["smtp"] == {"host": "127.0.0.1", "port": system.smtp_port, "sink": False,
                                 "mail_dir": None}
        pids = {n: c["pid"] for n, c in state["children"].items()}
        assert all(_alive(pid) for pid in pids.values())
    finally:
        code = system.terminate()
    assert code == 0, system.log.tail()
    assert [n for n, pid in pids.items() if _alive(pid)] == []
    final = system.state()["children"]
    assert {n: (c["returncode"], c["forced"]) for n, c in final.items()} == \
        {n: (0, False) for n in names}, system.log.tail()


def test_health_reports_every_dependency_ok(system):
    """GET /health is 200 and reports PostgreSQL, RabbitMQ and every service as ok."""
    status, body = system.health()
    assert status == 200, body
    assert body["status"] == "ok", body
    expected = {"postgresql", "rabbitmq", *(n for n in topology.service_names() if n != "gateway")}
    assert expected <= set(body["dependencies"]), body
    assert {n: d["ok"] for n, d in body["dependencies"].items()} == \
        {n: True for n in body["dependencies"]}, body


def test_openapi_is_served(system):
    with urllib.request.urlopen(system.base_url + "/openapi.json", timeout=10) as r:
        assert r.status == 200
        doc = json.loads(r.read())
    assert doc["openapi"].startswith("3.")
    assert "/health" in doc["paths"], sorted(doc["paths"])


def test_running_relay_publishes_appended_event(system, store):
    """An event appended to the store is published by the running system's relay to
    `<service>.events` with the event type as routing key (issue 2 item 6)."""
    exchange = event_exchange("eventstore")
    queue_name = unique("e2e-smoke-relay-")
    event_id = uuid.uuid4()
    with kombu.Connection(system.env.get("AMQP_URI") or settings_amqp()) as conn:
        queue = kombu.Queue(queue_name, exchange=exchange, routing_key="subject_key_shredded",
                            durable=False, auto_delete=True)
        queue(conn.channel()).declare()   # declares the exchange too, with the relay's parameters
        try:
            received = []
            with conn.Consumer(queue, callbacks=[lambda body, msg: (received.append(body), msg.ack())],
                               accept=["json"]):
                subject = unique("smoke")
                store.append(f"subject-{subject}", [NewEvent("subject_key_shredded",
                                                             {"subject": subject}, event_id)],
                             NO_STREAM, Metadata(actor=Actor("system", "e2e"),
                                            correlation_id=str(uuid.uuid4()), service="e2e"))
                for _ in range(300):   # bounded wait for delivery; not a speed assertion
                    if any(b.get("event_id") == str(event_id) for b in received):
                        break
                    try:
                        conn.drain_events(timeout=0.2)
                    except TimeoutError:
                        pass
        finally:
            queue(conn.channel()).delete()
    mine = [b for b in received if b.get("event_id") == str(event_id)]
    assert len(mine) == 1, received
    assert mine[0]["type"] == "subject_key_shredded"
    assert mine[0]["stream_name"] == f"subject-{subject}"


def settings_amqp() -> str:
    from services.config import Settings
    return Settings().amqp_uri


def test_killed_service_shows_in_health_until_started_again(system):
    """stop_service/start_service (for the reliability tests): a SIGKILLed service makes
    /health 503 naming it, the runner does not restart it, and a fresh process brings it back."""
    system.stop_service("notifier")
    status, body = system.health()
    assert status == 503, body
    assert body["dependencies"]["notifier"]["ok"] is False
    assert body["dependencies"]["identity"]["ok"] is True
    assert system.state()["children"]["notifier"]["running"] is False
    system.start_service("notifier")   # waits for /health 200
    status, body = system.health()
    assert status == 200 and body["dependencies"]["notifier"]["ok"] is True, body
