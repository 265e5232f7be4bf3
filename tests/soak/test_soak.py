"""Faults during load (issue 7 item 1; SPEC R-LEG-3, R-INI-1…9, R-PLT reliability).

Complete initial operations over HTTP by concurrent clients (tests/soak/loadgen.py) against a
whole system of its own (database and RabbitMQ vhost of its own), while the fault injector
(tests/soak/faults.py) cuts the vhost's AMQP connections, SIGKILLs a service process and
starts a fresh one, and kills every PostgreSQL backend of the system's database; the slow
soak also restarts the PostgreSQL server once. Afterwards (tests/soak/harness.py): every flow
completed, nothing unclear, read models = replay, chain verifies, one token mail per
token_issued, no effect twice, and no secret in the system's log (tests/soak/secrets_scan.py).

`make test` runs the small soak; `make soak` runs ``-m slow`` (≥ 1,000 flows; SOAK_FLOWS,
SOAK_CLIENTS, SOAK_PG_RESTART=0 to cut the database's backends instead of restarting the
shared server).
"""
from __future__ import annotations

import os

import pytest

from tests.soak.harness import default_schedule, repeating_schedule, run_soak, to_json
from tests.soak.secrets_scan import SecretSet, scan_file


def check(report, tmp_path) -> None:
    print("\n" + report.summary(), "\nfailed:", report.failed[:5], "\nfaults:", report.fault_notes[-30:])
    (tmp_path / "soak-report.json").write_text(to_json(report))
    assert not report.failed, report.failed[:10]
    assert not report.unclear, report.unclear[:10]
    assert report.completed == report.flows
    assert report.replay_check[0] == 0, report.replay_check[1]
    assert report.verify[0] == 0, report.verify[1]
    assert report.token_issued >= report.flows
    assert report.lost == 0 and report.duplicates == 0, report.summary()
    assert not report.duplicate_effects, report.duplicate_effects[:10]
    secrets = SecretSet.from_loadgen(report.secrets)
    assert len(secrets.totp_secrets) == report.flows and secrets.short_codes
    findings = scan_file(report.log_path, secrets)
    assert not findings, "\n".join(f"{f.line_no} {f.kind}: {f.excerpt}" for f in findings[:20])


@pytest.mark.timeout(400)
def test_small_soak_every_fault_kind_once_loses_nothing(settings, tmp_path):
    flows = int(os.environ.get("SOAK_SMALL_FLOWS", "30"))
    kinds = ["rabbitmq_cut", "service_kill", "postgres_terminate"]
    # Longer than the notifier's mail lease (MAIL_LEASE_SECONDS, 120 s): a notifier killed
    # while sending holds its claim on that mail until the lease runs out, then the timer of
    # the restarted one sends it. Late, not lost; a flow given less time would call it stranded.
    report = run_soak(tmp_path, flows=flows, clients=12, flow_timeout=200,
                      schedule_for=lambda system: default_schedule(kinds))
    check(report, tmp_path)
    assert set(report.faults) == set(kinds), (report.faults, report.fault_notes)


@pytest.mark.slow
@pytest.mark.timeout(4 * 3600)
def test_soak_thousand_flows_under_repeated_faults(settings, tmp_path):
    flows = int(os.environ.get("SOAK_FLOWS", "1000"))
    clients = int(os.environ.get("SOAK_CLIENTS", "20"))
    pg_restart = os.environ.get("SOAK_PG_RESTART", "1") == "1"
    once = ("postgres_restart",) if pg_restart else ("postgres_terminate",)
    report = run_soak(tmp_path, flows=flows, clients=clients, schedule_for=lambda system: repeating_schedule(
        max(6, flows // 40), ["rabbitmq_cut", "service_kill", "service_kill", "postgres_terminate",
                              "rabbitmq_restart"], once=once))
    check(report, tmp_path)
    assert report.faults[once[0]] >= 1, (report.faults, report.fault_notes)
