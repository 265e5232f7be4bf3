"""The operator's command line (`tsunagi`), the process runner and the compose file.

Issue 2 items 2 (make run: set-up is idempotent; Ctrl-C stops everything), 4 (verify names
the first broken position) and 10 (`docker compose config` accepts docker-compose.yml).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from contracts.events import Actor, Metadata, NewEvent
from services import db, topology
from services.cli import COMMANDS
from tests.conftest import unique
from tests.support.cli import run_until_ready, tsunagi

ROOT = Path(__file__).resolve().parents[2]
META = Metadata(actor=Actor("system", "test"), correlation_id=str(uuid.uuid4()), service="test")


def test_help_lists_every_command():
    result = tsunagi("--help")
    assert result.returncode == 0, result.stderr
    for command in ("db", "run", "service", "relay", "verify", "smtp-sink"):
        assert command in result.stdout
    assert len(COMMANDS) == len(set(COMMANDS))
    sub = tsunagi("verify", "--help")
    assert sub.returncode == 0 and "--from" in sub.stdout and "--json" in sub.stdout


def test_unknown_service_is_refused_with_usage_error():
    result = tsunagi("service", "no_such_service")
    assert result.returncode == 2
    assert "unknown service" in result.stderr and "identity" in result.stderr


def test_db_setup_twice_is_idempotent(settings):
    """`make run` applies the schema on every start: the second run changes nothing and succeeds."""
    name = f"tsunagi_cli_{uuid.uuid4().hex[:10]}"
    env = {"DATABASE_URL": db.url_for(settings.database_url, name)}
    try:
        first = tsunagi("db", "setup", env=env)
        assert first.returncode == 0, first.stderr
        assert f"created database {name}" in first.stdout
        second = tsunagi("db", "setup", "--json", env=env)
        assert second.returncode == 0, second.stderr
        report = json.loads(second.stdout)
        assert report["ok"] and report["database"] == name
        assert not any(m.startswith("created") for m in report["messages"])
        with psycopg.connect(db.admin_url_for(settings, name)) as c:
            assert c.execute("SELECT to_regclass('eventstore.events') IS NOT NULL").fetchone()[0]
    finally:
        db.drop_database(settings, name)


def _append_and_seal(store, n: int) -> None:
    for _ in range(n):
        store.append(f"clitest-{unique()}", [NewEvent("cli_test_event", {"n": 1})], 0, META)
    store.seal_all()


def test_verify_good_log_exits_0(settings, scratch_db, scratch_store):
    _append_and_seal(scratch_store, 5)
    result = tsunagi("verify", env={"DATABASE_URL": scratch_db})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "chain ok: 5 events" in result.stdout
    as_json = json.loads(tsunagi("verify", "--json", env={"DATABASE_URL": scratch_db}).stdout)
    assert as_json["ok"] is True and as_json["checked"] == 5 and as_json["first_broken"] is None


def test_verify_tampered_log_exits_1_naming_position(settings, scratch_db, scratch_store):
    _append_and_seal(scratch_store, 6)
    # Tamper as the superuser with the append-only triggers switched off for this session.
    with psycopg.connect(db.admin_url_for(settings, db.dbname_of(scratch_db)), autocommit=True) as c:
        c.execute("SET session_replication_role = replica")
        c.execute("UPDATE eventstore.events SET data = '{\"n\": 2}' WHERE id = "
                  "(SELECT event_seq FROM eventstore.log WHERE global_position = 4)")
    text = tsunagi("verify", env={"DATABASE_URL": scratch_db})
    assert text.returncode == 1
    assert "BROKEN at position 4" in text.stdout
    as_json = tsunagi("verify", "--json", env={"DATABASE_URL": scratch_db})
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["first_broken"] == 4
    # From after the tampered row the remaining chain is intact.
    assert tsunagi("verify", "--from", "5", env={"DATABASE_URL": scratch_db}).returncode == 0


def test_verify_without_database_fails_with_one_line(settings):
    url = db.url_for(settings.database_url, f"tsunagi_missing_{uuid.uuid4().hex[:8]}")
    result = tsunagi("verify", env={"DATABASE_URL": url})
    assert result.returncode == 1
    assert "cannot connect to the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_service_command_runs_one_nameko_service_and_stops_on_sigterm(settings, tmp_path):
    """`tsunagi service NAME` (one service per process, as docker-compose runs them) starts the
    class defined in the module, although the module imports a mixin with entrypoints."""
    code, out = run_until_ready("notifier", tmp_path)
    assert code == 0, out
    assert "ready: notifier" in out
    assert "stopping services: notifier" in out


def test_runner_starts_a_sink_only_without_smtp_settings(tmp_path, monkeypatch):
    """`make run` starts its own SMTP sink only when SMTP_HOST/SMTP_PORT are not given, and
    points every service at whichever server is used; --instances N starts N of each."""
    from services import runner
    from services.config import Settings

    monkeypatch.delenv("SMTP_HOST", raising=False)
    monkeypatch.delenv("SMTP_PORT", raising=False)
    specs, state = runner.build(Settings(), run_dir=tmp_path, sink_port=18025)
    names = [s.name for s in specs]
    assert names == ["smtp-sink", "relay", *topology.service_names()]
    assert state["smtp"]["sink"] is True
    assert all((s.env["SMTP_HOST"], s.env["SMTP_PORT"]) == ("127.0.0.1", "18025") for s in specs)

    monkeypatch.setenv("SMTP_HOST", "mail.example.test")
    monkeypatch.setenv("SMTP_PORT", "2525")
    specs, state = runner.build(Settings(), run_dir=tmp_path, instances=2)
    names = [s.name for s in specs]
    assert "smtp-sink" not in names and state["smtp"]["sink"] is False
    assert names.count("relay") == 1
    assert {"identity.1", "identity.2", "gateway.1", "gateway.2"} <= set(names)
    assert len(names) == 1 + 2 * len(topology.SERVICE_MODULES)
    assert all((s.env["SMTP_HOST"], s.env["SMTP_PORT"]) == ("mail.example.test", "2525") for s in specs)


# -- the runner (services/runner.py) with stand-in children ----------------------------------

def _run_runner(tmp_path: Path, children: dict[str, str], *, stop_after: float | None = None,
                grace: float = 2.0, keep_going: bool = False) -> tuple[int, str, dict]:
    """Run a Runner over small Python children in a process of its own (it installs signal
    handlers); optionally SIGTERM it once every child has printed 'ready'."""
    script = textwrap.dedent(f"""
        import sys
        from services.runner import ChildSpec, Runner, child_env
        children = {children!r}
        specs = [ChildSpec(n, [sys.executable, "-c", code], child_env()) for n, code in children.items()]
        sys.exit(Runner(specs, grace={grace}, keep_going={keep_going},
                        run_dir={str(tmp_path)!r}).run())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    if stop_after is not None:
        ready = 0
        for line in proc.stdout:
            lines.append(line)
            ready += line.rstrip().endswith("| ready")
            if ready == len(children):
                proc.terminate()
                break
    out, _ = proc.communicate(timeout=60)
    state = json.loads((tmp_path / "processes.json").read_text())
    return proc.returncode, "".join(lines) + out, state


def test_runner_prefixes_output_and_does_not_restart_an_exited_child(tmp_path):
    code, out, state = _run_runner(tmp_path, {
        "steady": "import time; print('ready', flush=True); time.sleep(60)",
        "crasher": "import time; time.sleep(0.5); print('going down', flush=True); raise SystemExit(3)",
    })
    assert code == 1
    assert re.search(r"^crasher +\| going down$", out, re.M), out
    assert "crasher exited with status 3; it is NOT restarted" in out
    assert out.count("started crasher") == 1
    # The rest were stopped by SIGTERM, within the grace period.
    assert state["children"]["steady"]["returncode"] == -15   # default SIGTERM action
    assert state["children"]["steady"]["forced"] is False
    assert state["children"]["crasher"]["returncode"] == 3


def test_runner_stops_children_on_sigterm_and_kills_stubborn_ones(tmp_path):
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(60)")
    polite = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
              "print('ready', flush=True); time.sleep(60)")
    code, out, state = _run_runner(tmp_path, {"polite": polite, "stubborn": stubborn},
                                   stop_after=0, grace=1.0)
    assert code == 0, out
    assert (state["children"]["polite"]["returncode"], state["children"]["polite"]["forced"]) == (0, False)
    assert state["children"]["stubborn"]["forced"] is True
    assert state["children"]["stubborn"]["returncode"] == -9
    assert "stubborn did not stop within 1s: SIGKILL" in out
    for child in state["children"].values():
        assert not Path(f"/proc/{child['pid']}").exists() or \
            open(f"/proc/{child['pid']}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"


# -- docker-compose.yml ---------------------------------------------------------------------

def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    assert legacy, "docker-compose is missing: `python -m tests.setup_machine` installs it"
    return [legacy]


def test_docker_compose_config_accepts_the_file():
    """`docker compose config` validates docker-compose.yml (no engine needed); every Nameko
    service of the topology, the relay, the databases and a mail catcher are in it."""
    result = subprocess.run([*_compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    names = {n.replace("-", "_") for n in services}
    assert {"rabbitmq", "postgres", "db_setup", "relay", "mailpit"} <= names
    for module in topology.SERVICE_MODULES:
        name = topology.service_name(module)
        assert name in names, f"{name} missing from docker-compose.yml"
        spec = services.get(name) or services[name.replace("_", "-")]
        assert spec["command"][-1] == name and "service" in spec["command"]
    assert "8000" in json.dumps(services["gateway"]["ports"])
