"""Schemathesis against the running gateway's ``/openapi.json`` (issue 7 item 3; R-PLT-3).

Every operation of the description gets generated requests — positive (fit the schema) and
negative (do not) — sent with a live session of the kind the operation wants, so generated
bodies reach the services and not just the session check. For every answer:

- never a 5xx;
- every error (status ≥ 400) is ``application/problem+json`` with type/title/status/code/
  detail/correlation_id, a Japanese ``detail`` and ``correlation_id`` = ``X-Request-ID``;
- the answer conforms to the description (schemathesis' ``content_type_conformance`` and
  ``response_schema_conformance``, ``status_code_conformance``: every status answered, the
  services' domain problems included, is documented for its operation; a 429 has Retry-After).

Not stateful in schemathesis' sense: the description has no OpenAPI links, so its state
machine would have no transitions. The state that matters is supplied instead: real sessions
(migration and customer), and for the path parameters a share of real ids (the customer's own
OTP application) besides generated ones.

``FUZZ_EXAMPLES`` (examples per operation and generation mode, default 20) scales the run: the
default gives ≥ 1,000 cases; a bigger run is e.g.
``FUZZ_EXAMPLES=200 make test PYTEST_ARGS="tests/security/test_fuzz_openapi.py"``.
"""
from __future__ import annotations

import collections
import json
import os
import threading
import time

import eventlet

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from tests.security.common import ACTIVATION_PASSWORD, NEW_CONFIRMATION

PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES", "20"))
CONCURRENCY = 4
MIN_CASES = 1000
# /health answers 503 with its documented JSON body when a dependency is down — a report on
# the environment (other test runs on this machine can use up PostgreSQL's connections), not
# an answer to the generated input; every other 5xx is a failure.
ENVIRONMENT_REPORTS = {"/health"}
# Operations that end the session they are called with.
SESSION_ENDING = {"/api/v1/logout"}
PROBLEM_FIELDS = ("type", "title", "status", "code", "detail", "correlation_id")


def header(response, name: str) -> str | None:
    """A header of a requests or a schemathesis response (lower-case keys, list values)."""
    value = response.headers.get(name.lower(), response.headers.get(name))
    return value[0] if isinstance(value, list) else value


def problem_failures(response) -> list[str]:
    """What is wrong with an error response as a problem of this API (empty: nothing)."""
    if response.status_code < 400:
        return []
    content_type = header(response, "Content-Type") or ""
    if content_type.split(";")[0].strip() != "application/problem+json":
        return [f"Content-Type {content_type!r}"]
    try:
        body = json.loads(response.content)
    except ValueError:
        return ["body is not JSON"]
    wrong = [f"no {f}" for f in PROBLEM_FIELDS if f not in body]
    if not wrong:
        if body["status"] != response.status_code:
            wrong.append(f"status {body['status']} in body")
        if body["type"] != f"urn:tsunagi:problem:{body['code']}":
            wrong.append(f"type {body['type']!r}")
        if not isinstance(body["detail"], str) or body["detail"].isascii():
            wrong.append("detail is not Japanese")
        if body["correlation_id"] != header(response, "X-Request-ID"):
            wrong.append("correlation_id differs from X-Request-ID")
    return wrong


class Tally:
    def __init__(self):
        self.cases = 0
        self.by_operation = collections.Counter()
        self.statuses = collections.Counter()
        self.failures: dict[tuple, str] = {}
        self.http_seconds = 0.0

    def fail(self, label: str, kind: str, detail: str, case) -> None:
        key = (label, kind, detail[:120])
        if key not in self.failures:
            try:
                curl = case.as_curl_command()
            except Exception:   # noqa: BLE001 - the curl line is a courtesy
                curl = ""
            self.failures[key] = f"{label}: {kind}: {detail[:400]}\n    {curl[:600]}"


@pytest.fixture(scope="module")
def sessions(customers, system):
    """A migration session (step 3), a customer session with an OTP application of its own."""
    at_step_3 = customers.migration()
    c = customers.logged_in()
    r = c.api.get("/api/v1/me/phones", token=c.token)
    assert r.status_code == 200, r.text
    r = c.api.post("/api/v1/otp/applications", {
        "email": f"fuzz-{c.number}@example.jp", "email_confirmation": f"fuzz-{c.number}@example.jp",
        "activation_password": ACTIVATION_PASSWORD, "activation_password_confirmation": ACTIVATION_PASSWORD,
        "phone_id": r.json()[0]["phone_id"], "confirmation_password": NEW_CONFIRMATION}, token=c.token)
    assert r.status_code == 201, r.text
    return {"migration": at_step_3.token, "customer": c.token, "any": c.token,
            "sacrificial": customers.logged_in().token,
            "application_id": r.json()["application_id"]}


def run_fuzz(system, sessions, per_operation: int) -> Tally:
    spec = requests.get(system.base_url + "/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_url(system.base_url + "/openapi.json")
    # Generation (CPU, here) overlaps with the answers (the system's processes): generated
    # cases are sent by a few green threads, each with a keep-alive session of its own.
    pool = eventlet.GreenPool(CONCURRENCY)
    local = threading.local()      # green-thread local under eventlet's monkey patching
    tally = Tally()
    real_ids = {"application_id": sessions["application_id"]}
    checks = [content_type_conformance, response_schema_conformance]

    def exercise(case):
        label = f"{case.method} {case.path}"
        kind = spec["paths"][case.path][case.method.lower()].get("x-session-kind")
        headers = {"Authorization": f"Bearer {sessions[kind]}"} if kind else {}
        if case.path in SESSION_ENDING and kind:   # not the session every other case uses
            headers = {"Authorization": f"Bearer {sessions['sacrificial']}"}
        if not hasattr(local, "http"):
            local.http = requests.Session()
        started = time.monotonic()
        try:
            response = case.call(base_url=system.base_url, session=local.http, headers=headers, timeout=60)
        except requests.RequestException as exc:
            tally.fail(label, "transport", repr(exc), case)
            return
        finally:
            tally.http_seconds += time.monotonic() - started
        tally.cases += 1
        tally.by_operation[label] += 1
        tally.statuses[response.status_code] += 1
        documented = spec["paths"][case.path][case.method.lower()]["responses"].get(str(response.status_code), {})
        json_answer = "application/json" in documented.get("content", {})   # e.g. /health's 503 body
        if response.status_code >= 500 and not (case.path in ENVIRONMENT_REPORTS and json_answer):
            tally.fail(label, f"server error {response.status_code}", response.text, case)
        if not json_answer:
            for wrong in problem_failures(response):
                tally.fail(label, "not a problem+json", f"{response.status_code}: {wrong}", case)
        # Every status, the services' domain problems included (gateway/openapi.py lists them
        # per operation): no allow-list.
        try:
            case.validate_response(response, checks=[status_code_conformance])
        except Exception as exc:  # noqa: BLE001 - schemathesis' FailureGroup, collected below
            tally.fail(label, "status_code_conformance", str(exc).splitlines()[0], case)
        if response.status_code == 429 and not (header(response, "Retry-After") or "").isdigit():
            tally.fail(label, "429 without Retry-After", response.text, case)
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:  # noqa: BLE001
            tally.fail(label, "schema conformance", " ".join(str(exc).split())[:300], case)

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            params = [p for p in real_ids if "{" + p + "}" in operation.path]
            if params and mode is GenerationMode.POSITIVE:   # the customer's own resource too
                strategies.append(operation.as_strategy(
                    generation_mode=mode, path_parameters={p: real_ids[p] for p in params}))
            for strategy in strategies:
                @settings(max_examples=per_operation // len(strategies) or 1, deadline=None, database=None,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(strategy)
                def fuzz(case):
                    pool.spawn_n(exercise, case)
                try:
                    fuzz()
                except Exception as exc:  # noqa: BLE001 - e.g. unsatisfiable negative schema
                    if "Unsatisfiable" not in type(exc).__name__ and "unsatisfiable" not in str(exc).lower():
                        raise
    pool.waitall()
    return tally


def report(tally: Tally, seconds: float) -> str:
    lines = [f"schemathesis: {tally.cases} cases over {len(tally.by_operation)} operations in {seconds:.1f} s "
             f"({tally.http_seconds:.1f} s of answer waits summed over {CONCURRENCY} senders)",
             "statuses: " + json.dumps(dict(sorted(tally.statuses.items())))]
    lines += [f"  {n:5d}  {label}" for label, n in sorted(tally.by_operation.items())]
    return "\n".join(lines)


@pytest.mark.timeout(600)   # the budget is the case count; a loaded 2-core machine is slower
def test_r_plt_3_generated_requests_never_5xx_always_problem_json_and_as_documented(system, sessions):
    started = time.monotonic()
    tally = run_fuzz(system, sessions, PER_OPERATION)
    print("\n" + report(tally, time.monotonic() - started))
    assert not tally.failures, f"{len(tally.failures)} distinct failures:\n" + "\n".join(tally.failures.values())
    assert tally.cases >= MIN_CASES, report(tally, time.monotonic() - started)
    paths = {p for p in requests.get(system.base_url + "/openapi.json", timeout=30).json()["paths"]}
    # Every endpoint; schemathesis leaves out the description it was loaded from (the hostile
    # tests request /openapi.json themselves).
    assert {label.split(" ", 1)[1] for label in tally.by_operation} == paths - {"/openapi.json"}
