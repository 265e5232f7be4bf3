"""The SIP edge end to end: SIPp places real calls to Kamailio (deploy/kamailio/kamailio.cfg),
Kamailio publishes each INVITE as ``inbound_call`` into this test run's RabbitMQ vhost, and
phone_auth records what the call meant (SPEC R-INI-4; DESIGN.md "Telephony").

phone_auth runs in this process (Nameko ServiceRunner) on the session database and vhost; the
call never goes through the relay. The calls run at the same time (each rings ~3 s), so the
module takes a few seconds, not one ring per call. SIPp fails a call on any response its
scenario does not expect: a 200 (answering) fails it, as does a missing 180 or 603.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import eventlet
import pytest
from nameko.runners import ServiceRunner
from nameko.standalone.rpc import ClusterRpcProxy

from contracts import phone_auth as c
from contracts import telephony
from phone_auth.service import PhoneAuthService

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "kamailio" / "kamailio.cfg"
SCENARIOS = Path(__file__).resolve().parent / "sipp"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
CARRIER = "127.0.0.2"       # the "carrier" signalling address: its P-Asserted-Identity counts
SUBSCRIBER = "127.0.0.1"    # anyone else


def _require_tools():
    missing = [tool for tool in ("kamailio", "sipp") if shutil.which(tool) is None]
    if not (MODULES / "rabbitmq.so").exists():
        missing.append("kamailio-rabbitmq-modules")
    if missing:
        pytest.fail(f"missing {missing}: run `python -m tests.setup_machine` (make test does)")


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def sip_options_answered(port: int) -> bool:
    """One OPTIONS ping (the carrier keep-alive); True when Kamailio answers 200."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.5)
        local = s.getsockname()[1]
        tag = uuid.uuid4().hex[:8]
        msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{tag}\r\n"
               f"From: <sip:probe@127.0.0.1>;tag={tag}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
               f"Call-ID: probe-{tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
               "Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def generated_config(path: Path, sip_port: int, amqp_uri: str) -> Path:
    """The deployed configuration with this run's settings in front of it."""
    path.write_text(
        "#!KAMAILIO\n"
        f"#!define SIP_LISTEN udp:127.0.0.1:{sip_port}\n"
        f'#!define AMQP_URL "{amqp_uri}"\n'
        f'#!define CARRIER_ADDRESSES "{CARRIER}/32"\n'
        "#!define SIP_CHILDREN 2\n"
        "#!define LOG_LEVEL 2\n"
        f'include_file "{CONFIG}"\n')
    return path


@pytest.fixture(scope="module")
def phone_auth(settings):
    cfg = {"AMQP_URI": settings.amqp_uri, "max_workers": 10, "serializer": "json",
           "DATABASE_URL": settings.database_url}
    runner = ServiceRunner(cfg)
    runner.add_service(PhoneAuthService)
    runner.start()        # declares telephony.events and phone_auth's queue before any call
    with ClusterRpcProxy(cfg, timeout=30) as proxy:
        yield proxy.phone_auth
    runner.stop()


@pytest.fixture(scope="module")
def kamailio(settings, phone_auth, tmp_path_factory):
    _require_tools()
    work = tmp_path_factory.mktemp("kamailio")
    port = free_udp_port()
    cfg = generated_config(work / "kamailio.cfg", port, settings.amqp_uri)
    log = open(work / "kamailio.log", "wb")
    proc = subprocess.Popen(
        ["kamailio", "-f", str(cfg), "-L", str(MODULES), "-DD", "-E", "-m", "32", "-M", "4",
         "-w", str(work), "-Y", str(work)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while not sip_options_answered(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kamailio did not start:\n" + (work / "kamailio.log").read_text()[-3000:])
        yield {"port": port, "log": work / "kamailio.log", "work": work}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@dataclass
class Call:
    name: str
    scenario: str
    dialled: str
    caller: str
    source: str
    extra_keys: tuple = ()

    def __post_init__(self):
        self.call_id = f"tsunagi-{self.name}-{uuid.uuid4().hex[:12]}-1@{self.source}"

    @property
    def key(self):
        return telephony.call_key("sip", self.call_id)


def place_calls(kamailio, calls: list[Call]) -> dict[str, tuple[int, str]]:
    """Run one SIPp per call, all at once; returns name → (exit status, SIPp's message trace)."""
    procs = {}
    for call in calls:
        trace = kamailio["work"] / f"sipp-{call.name}.log"
        keys = [arg for name, value in (("caller", call.caller), *call.extra_keys)
                for arg in ("-key", name, value)]
        argv = ["sipp", f"127.0.0.1:{kamailio['port']}", "-sf", str(SCENARIOS / call.scenario),
                "-s", call.dialled, *keys, "-m", "1", "-i", call.source,
                "-p", str(free_udp_port(call.source)),
                "-cid_str", call.call_id.rsplit("-1@", 1)[0] + "-%u@%s",
                "-timeout", "20s", "-timeout_error", "-nostdin", "-nr",
                "-trace_msg", "-message_file", str(trace)]
        procs[call.name] = (subprocess.Popen(argv, cwd=kamailio["work"], stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), trace)
    out = {}
    for name, (proc, trace) in procs.items():
        code = proc.wait(timeout=60)
        out[name] = (code, trace.read_text(errors="replace") if trace.exists() else "")
    return out


def start(rpc, phone):
    app = f"app-{uuid.uuid4().hex[:8]}"
    v = rpc.start_verification(app, f"{random.randrange(10**9, 10**10):010d}", phone)
    return v


def wait_recorded(store, call: Call, timeout: float = 20.0):
    """phone_auth's record of the call (written in the transaction that applied it)."""
    deadline = time.monotonic() + timeout
    while True:
        events = store.read_stream(c.call_stream(call.key))
        if events:
            return events[0]
        assert time.monotonic() < deadline, f"phone_auth never recorded the {call.name} call"
        eventlet.sleep(0.05)


def attempts_by_call(store, vid) -> dict[str, str]:
    return {e.data["call_key"]: (e.data.get("reason") or "succeeded")
            for e in store.read_stream(c.verification_stream(vid))
            if e.type in ("phone_verification_attempt_failed", "phone_verification_succeeded")}


def responses(trace: str, method: str = "INVITE") -> list[str]:
    """Status codes SIPp received for ``method`` (by CSeq), in order, from its message trace."""
    codes = []
    for block in trace.split("\n-----------------------------------------------"):
        lines = [line.strip() for line in block.splitlines()]
        status = next((line for line in lines if line.startswith("SIP/2.0 ")), None)
        cseq = next((line for line in lines if line.lower().startswith("cseq:")), "")
        if status and cseq.split()[-1:] == [method]:
            codes.append(status.split()[1])
    return codes


def new_mobile() -> str:
    return f"+8190{random.randrange(10**7, 10**8)}"


def test_r_ini_4_calls_through_kamailio_ring_are_declined_and_verify(kamailio, phone_auth, store):
    """R-INI-4 over real SIP: 100/180/603 and never 200; the registered phone verifies,
    Privacy: id is withheld (even with a true P-Asserted-Identity), PAI is believed only from
    the carrier's address, a caller who hangs up while it rings has still called."""
    phones = {name: new_mobile() for name in ("normal", "privacy", "carrier_pai", "spoofed_pai", "cancel")}
    v = {name: start(phone_auth, phone) for name, phone in phones.items()}
    dial = {name: v[name]["call_to"].replace("-", "") for name in phones}   # 0120000110
    national = {name: telephony.national_format(p).replace("-", "") for name, p in phones.items()}
    calls = [
        Call("normal", "uac_decline.xml", dial["normal"], national["normal"], SUBSCRIBER),
        Call("privacy", "uac_privacy_id.xml", dial["privacy"], phones["privacy"], CARRIER),
        Call("carrier_pai", "uac_pai.xml", dial["carrier_pai"], phones["carrier_pai"], CARRIER,
             (("from_user", "0312345678"),)),
        Call("spoofed_pai", "uac_pai.xml", dial["spoofed_pai"], phones["spoofed_pai"], SUBSCRIBER,
             (("from_user", "0398765432"),)),
        Call("cancel", "uac_cancel.xml", dial["cancel"], national["cancel"], SUBSCRIBER),
    ]
    results = place_calls(kamailio, calls)

    for call in calls:
        code, trace = results[call.name]
        assert code == 0, f"SIPp {call.name} failed ({code}):\n{trace[-4000:]}"
        got = responses(trace)
        assert got and not any(code.startswith("2") for code in got), got    # never answered
        if call.name == "cancel":
            assert got[-2:] == ["180", "487"], got
            assert responses(trace, "CANCEL") == ["200"]
        else:
            assert got[0] in ("100", "180") and got[-2:] == ["180", "603"], got

    recorded = {call.name: wait_recorded(store, call) for call in calls}
    for call in calls:
        data = recorded[call.name].data
        assert data["edge"] == "sip" and data["call_id"] == call.call_id
        assert data["called"] == telephony.normalize_phone(dial[call.name])

    by = {name: attempts_by_call(store, v[name]["verification_id"]) for name in phones}
    key = {call.name: str(call.key) for call in calls}
    assert by["normal"].get(key["normal"]) == "succeeded"
    assert recorded["privacy"].data["withheld"] is True and recorded["privacy"].data["caller"] is None
    assert by["privacy"].get(key["privacy"]) == c.WITHHELD
    assert recorded["carrier_pai"].data["caller"] == phones["carrier_pai"]
    assert by["carrier_pai"].get(key["carrier_pai"]) == "succeeded"
    assert recorded["spoofed_pai"].data["caller"] == "+81398765432"    # From, not the PAI
    assert by["spoofed_pai"].get(key["spoofed_pai"]) == c.UNKNOWN_CALLER
    assert by["cancel"].get(key["cancel"]) == "succeeded"

    status = {name: phone_auth.status(v[name]["verification_id"])["status"] for name in phones}
    assert status == {"normal": c.VERIFIED, "privacy": c.AWAITING_CALL, "carrier_pai": c.VERIFIED,
                      "spoofed_pai": c.AWAITING_CALL, "cancel": c.VERIFIED}


def test_r_ini_4_a_number_this_edge_does_not_serve_is_not_published(kamailio, store):
    call = Call("elsewhere", "uac_decline.xml", "0312345678", "09012345678", SUBSCRIBER)
    code, trace = place_calls(kamailio, [call])["elsewhere"]
    assert code != 0 and responses(trace)[-1] == "404", trace[-2000:]
    # Kamailio publishes before it rings, and this call never rang: nothing was published.
    assert store.read_stream(c.call_stream(call.key)) == []
