"""The problem responses documented per operation in ``/openapi.json`` (R-PLT-3).

The fuzz test (tests/security/test_fuzz_openapi.py) checks the running system answers no
status its operation does not list; these check the rules that produce the lists."""
from __future__ import annotations

import pytest

from gateway.http import PROBLEM_JSON, routes_of
from gateway.openapi import _DOMAIN_PROBLEMS, build_spec
from gateway.service import GatewayService

ROUTES = routes_of(GatewayService)
SPEC = build_spec(GatewayService)


def responses(route) -> dict:
    return SPEC["paths"][route.path][route.method.lower()]["responses"]


def test_domain_problem_table_names_only_operations_that_exist():
    assert set(_DOMAIN_PROBLEMS) <= {r.handler for r in ROUTES}


@pytest.mark.parametrize("route", [r for r in ROUTES if r.auth is not None], ids=lambda r: r.handler)
def test_authenticated_operations_document_401_and_403(route):
    assert {"401", "403"} <= set(responses(route))


@pytest.mark.parametrize("route", [r for r in ROUTES if r.path_params], ids=lambda r: r.handler)
def test_operations_with_path_ids_document_404(route):
    assert "404" in responses(route)


@pytest.mark.parametrize("route", [r for r in ROUTES if r.rate_limit], ids=lambda r: r.handler)
def test_rate_limited_operations_document_429_with_retry_after(route):
    answer = responses(route)["429"]
    assert "Retry-After" in answer["headers"]
    assert PROBLEM_JSON in answer["content"]


def test_operations_without_rate_limit_do_not_document_429():
    assert all("429" not in responses(r) for r in ROUTES if r.rate_limit is None)


def test_domain_conflicts_and_locks_are_documented_as_problems():
    login = next(r for r in ROUTES if r.handler == "migration_login")
    for status in ("401", "403", "409", "423"):
        schema = responses(login)[status]["content"][PROBLEM_JSON]["schema"]
        assert schema == {"$ref": "#/components/schemas/Problem"}


def test_public_read_only_operations_document_no_session_problems():
    catalogue = next(r for r in ROUTES if r.handler == "secret_question_catalogue")
    assert not {"401", "403", "404", "409", "423"} & set(responses(catalogue))
