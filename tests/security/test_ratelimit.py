"""Rate limiting per client address on the login and activation endpoints (issue 7 item 4;
``gateway/ratelimit.py``; R-RBA-2's brake on guessing across customers).

The window arithmetic is checked with a clock the test moves; the wiring with a gateway that
runs in this process with ``RATE_LIMIT_LOGIN=3/60`` and ``RATE_LIMIT_ACTIVATION=2/60`` and
talks to the running system's services (same RabbitMQ vhost and database). Its clients come
from two loopback addresses (127.0.0.1 and 127.0.0.2) to show the limit is per address. The
system's own gateway runs with the defaults (no limit): the rest of the suite depends on that.
"""
from __future__ import annotations

import http.client
import json

import pytest

from gateway import ratelimit
from gateway.ratelimit import Limit, RateLimited, RateLimits, SlidingWindow, parse_limit
from tests.security.common import Reply, assert_problem, new_number
from tests.support.net import free_port
from tests.support.services import running


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the window ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,limit", [("10/60", Limit(10, 60)), (" 3 / 1.5 ", Limit(3, 1.5)), (None, None),
                                        ("", None), ("off", None), ("OFF", None), ("0", None)])
def test_limit_settings_are_parsed(text, limit):
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["10", "ten/60", "0/60", "10/0", "-1/60", "10/60/2"])
def test_a_malformed_limit_is_refused_at_start(text):
    with pytest.raises(ValueError):
        parse_limit(text)


def test_n_requests_per_window_then_the_wait_until_the_oldest_leaves():
    clock = Clock()
    window = SlidingWindow(Limit(3, 60), clock=clock)
    for _ in range(3):
        assert window.acquire("203.0.113.1") == 0
        clock.now += 10                                   # at 1000, 1010, 1020
    assert window.acquire("203.0.113.1") == pytest.approx(30, abs=0.01)   # at 1030; 1000 leaves at 1060
    clock.now = 1059.5
    assert 0 < window.acquire("203.0.113.1") <= 0.51
    clock.now = 1060.01
    assert window.acquire("203.0.113.1") == 0             # one left the window: one more fits
    assert window.acquire("203.0.113.1") > 0


def test_refused_requests_do_not_extend_the_wait():
    clock = Clock()
    window = SlidingWindow(Limit(2, 60), clock=clock)
    window.acquire("a"), window.acquire("a")
    for _ in range(50):
        assert window.acquire("a") > 0
    clock.now += 60.01
    assert window.acquire("a") == 0


def test_every_address_has_its_own_window_and_memory_is_bounded():
    clock = Clock()
    window = SlidingWindow(Limit(1, 60), clock=clock, max_keys=100)
    assert window.acquire("a") == 0 and window.acquire("a") > 0
    assert window.acquire("b") == 0
    for i in range(500):
        window.acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(window.buckets) == 100


def test_rate_limits_raise_429_with_whole_seconds_and_off_means_off():
    clock = Clock()
    limits = RateLimits({"login": Limit(1, 60), "activation": None}, clock=clock)
    limits.check("login", "198.51.100.7")
    clock.now += 0.4
    with pytest.raises(RateLimited) as err:
        limits.check("login", "198.51.100.7")
    assert (err.value.status, err.value.code, err.value.extra["retry_after"]) == (429, "rate_limited", 60)
    assert not err.value.detail.isascii()
    for _ in range(100):
        limits.check("activation", "198.51.100.7")       # no limit configured
    with pytest.raises(ValueError):
        limits.check("nonsense", "198.51.100.7")


def test_the_policies_come_from_nameko_config_then_the_environment(monkeypatch):
    monkeypatch.setenv("RATE_LIMIT_ACTIVATION", "7/30")
    monkeypatch.delenv("RATE_LIMIT_LOGIN", raising=False)
    limits = RateLimits.from_config({"RATE_LIMIT_LOGIN": "5/60"})
    assert limits.windows["login"].limit == Limit(5, 60)
    assert limits.windows["activation"].limit == Limit(7, 30)
    monkeypatch.delenv("RATE_LIMIT_ACTIVATION")
    assert RateLimits.from_config({}).windows == {}       # the default: no limit


def test_unknown_policy_names_are_refused_when_a_route_is_declared():
    from gateway.http import api
    with pytest.raises(ValueError):
        api("POST", "/x", rate_limit="logins")


# -- through a gateway -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_gateway(system, settings):
    """A second gateway, in this process, with low limits, on the running system's bus."""
    from gateway.service import GatewayService
    port = free_port()
    config = {**settings.nameko_config(), "AMQP_URI": system.env["AMQP_URI"],
              "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}", "DATABASE_URL": system.env["DATABASE_URL"],
              "max_workers": 10, "RATE_LIMIT_LOGIN": "3/60", "RATE_LIMIT_ACTIVATION": "2/60"}
    with running(config, [GatewayService]):
        yield port


def post(port: int, path: str, body: dict, source: str = "127.0.0.1", headers: dict | None = None) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return Reply(r.status, r.headers, r.read())
    finally:
        conn.close()


def test_login_endpoints_share_a_limit_per_address_with_retry_after(limited_gateway):
    wrong = {"customer_number": new_number(), "password": "Wrong123x"}
    for _ in range(3):
        assert_problem(post(limited_gateway, "/api/v1/migration/login", wrong), 401, "invalid_credentials")
    r = post(limited_gateway, "/api/v1/migration/login", wrong)
    body = assert_problem(r, 429, "rate_limited")
    assert 1 <= int(r.headers["Retry-After"]) <= 60 and body["retry_after"] == int(r.headers["Retry-After"])
    # The normal login draws on the same budget of this address ...
    r = post(limited_gateway, "/api/v1/login", {"login_id": new_number(), "password": "Wrong123x"})
    assert_problem(r, 429, "rate_limited")
    # ... even a malformed request is counted and refused before it is parsed,
    assert_problem(post(limited_gateway, "/api/v1/login", {"nonsense": True}), 429, "rate_limited")
    # ... while another address has its own budget,
    assert_problem(post(limited_gateway, "/api/v1/migration/login", wrong, source="127.0.0.2"),
                   401, "invalid_credentials")
    # ... and routes without a policy are not limited.
    r = post(limited_gateway, "/api/v1/login/challenge", {"challenge_id": "x" * 10, "answer": "あ"})
    assert r.status_code != 429, r.text


def test_activation_has_a_limit_of_its_own(limited_gateway):
    body = {"service_id": "AMBK000117", "user_id": "0" * 16, "activation_password": "0000", "agreed": True}
    headers = {"X-App-Instance-ID": "app-ratelimit-0001"}
    for _ in range(2):
        r = post(limited_gateway, "/api/v1/otp-app/activate", body, source="127.0.0.3", headers=headers)
        assert r.status_code != 429 and r.status_code < 500, r.text
    assert_problem(post(limited_gateway, "/api/v1/otp-app/activate", body, source="127.0.0.3", headers=headers),
                   429, "rate_limited")
    # The login budget of that address is untouched.
    r = post(limited_gateway, "/api/v1/migration/login", {"customer_number": new_number(), "password": "Wrong1x"},
             source="127.0.0.3")
    assert_problem(r, 401, "invalid_credentials")


def test_the_default_system_has_no_limit(system):
    """The system fixture runs with the defaults: eleven failed logins in a row, none 429."""
    port = int(system.base_url.rsplit(":", 1)[1])
    statuses = [post(port, "/api/v1/migration/login", {"customer_number": new_number(), "password": "Wrong123x"}
                     ).status_code for _ in range(11)]
    assert statuses == [401] * 11
    assert ratelimit.POLICIES == {"login": "RATE_LIMIT_LOGIN", "activation": "RATE_LIMIT_ACTIVATION"}


# -- behind a reverse proxy (TRUSTED_PROXIES, gateway/client_address.py) --------------------------------

PROXY = "127.0.0.10"           # the one peer this gateway trusts to write X-Forwarded-For


@pytest.fixture(scope="module")
def proxied_gateway(system, settings):
    """A gateway, in this process, that trusts one proxy address and allows 2 logins a minute."""
    from gateway.service import GatewayService
    port = free_port()
    config = {**settings.nameko_config(), "AMQP_URI": system.env["AMQP_URI"],
              "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}", "DATABASE_URL": system.env["DATABASE_URL"],
              "max_workers": 10, "RATE_LIMIT_LOGIN": "2/60", "TRUSTED_PROXIES": f"{PROXY}, 10.0.0.0/8"}
    with running(config, [GatewayService]):
        yield port


def forwarded(port: int, chain: str, source: str = PROXY) -> Reply:
    wrong = {"customer_number": new_number(), "password": "Wrong123x"}
    return post(port, "/api/v1/migration/login", wrong, source=source, headers={"X-Forwarded-For": chain})


def test_behind_a_trusted_proxy_each_customer_address_has_its_own_limit(proxied_gateway):
    for _ in range(2):
        assert_problem(forwarded(proxied_gateway, "203.0.113.5"), 401, "invalid_credentials")
    assert_problem(forwarded(proxied_gateway, "203.0.113.5"), 429, "rate_limited")
    # another customer behind the same proxy is not held back by the first
    assert_problem(forwarded(proxied_gateway, "203.0.113.6"), 401, "invalid_credentials")
    # a customer who writes a fake address in front is still counted by the address the proxy saw
    assert_problem(forwarded(proxied_gateway, "198.51.100.99, 203.0.113.5"), 429, "rate_limited")
    # two trusted hops (the proxy behind an internal balancer at 10.x): the client is left of them
    assert_problem(forwarded(proxied_gateway, "203.0.113.5, 10.1.2.3"), 429, "rate_limited")


def test_an_untrusted_peer_cannot_pick_its_address_by_header(proxied_gateway):
    statuses = [forwarded(proxied_gateway, f"203.0.113.{100 + i}", source="127.0.0.11").status_code
                for i in range(3)]
    assert statuses == [401, 401, 429]


def test_the_forwarded_address_is_the_one_the_log_records(proxied_gateway, customers):
    c = customers.legacy()
    r = post(proxied_gateway, "/api/v1/migration/login", {"customer_number": c.number, "password": "Wrong123x"},
             source=PROXY, headers={"X-Forwarded-For": "192.0.2.44"})
    assert_problem(r, 401, "invalid_credentials")
    [failed] = [e for e in c.store.read_stream(f"customer-{c.number}") if e.type == "legacy_login_failed"]
    assert failed.metadata["client_address"] == "192.0.2.44"


def test_a_malformed_trusted_proxies_setting_stops_the_gateway():
    from gateway.client_address import parse_trusted
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_trusted("127.0.0.1, 10.0.0.0/33")
