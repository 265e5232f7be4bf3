"""Hostile-input, brute-force and enumeration tests (issue 7 items 3 and 4) against the whole
system, started as `make run` starts it (``tests.e2e.conftest.start_system``).

The system here has a database and a RabbitMQ virtual host of its own. When the whole suite
runs, ``tests/e2e`` has its own `tsunagi run` for the session too; two runs on one database
and vhost would be competing consumers of each other's work (a token mail of an e2e customer
could reach this run's SMTP sink). The fuzzer and the lockout tests also leave many locked
credentials and shadow counters behind that the e2e tests should never meet.

Customers are seeded through ``identity.import_legacy`` over RPC with pbkdf2 verifiers, as the
e2e tests do; ``customers.migration()`` / ``customers.migrated()`` / ``customers.logged_in()``
bring one to a stage and hand back a ``Customer`` with the token of that stage.
"""
from __future__ import annotations

import os

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from services import db
from tests import vhosts
from tests.conftest import unique
from tests.e2e.conftest import start_system
from tests.e2e.test_initial_operation_steps_2_4 import Api
from tests.security.common import RING_DELAY, Customers


@pytest.fixture(scope="session")
def system(settings, tmp_path_factory):
    """`tsunagi run` on a database and a RabbitMQ vhost of this package's own."""
    name = unique("tsunagi_sec_")
    db.setup(settings, name, log=lambda *_: None)
    own_vhost = vhosts.create(name)
    env = {"DATABASE_URL": db.url_for(settings.database_url, name),
           "AUDITOR_DATABASE_URL": db.url_for(settings.auditor_database_url, name),
           "TELEPHONY_RING_DELAY_SECONDS": RING_DELAY}
    if own_vhost:
        env["AMQP_URI"] = vhosts.uri_for(settings.amqp_uri, name)
    s = start_system(tmp_path_factory.mktemp("security-system"), env=env)
    s.database_name = name
    try:
        yield s
    finally:
        s.terminate()
        if own_vhost:
            vhosts.delete(name)
        if not os.environ.get("KEEP_TEST_DB"):
            db.drop_database(settings, name)


@pytest.fixture(scope="session")
def rpc(system):
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"], "serializer": "json"}, timeout=60) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def store(settings, system):
    """The event store of this package's system (overrides the session-database ``store``)."""
    from services.eventstore import open_store
    st = open_store(settings, database_url=system.env["DATABASE_URL"], max_size=4)
    yield st
    st.pool.close()


@pytest.fixture(scope="session")
def api(system) -> Api:
    return Api(system.base_url)


@pytest.fixture(scope="session")
def customers(rpc, api, store) -> Customers:
    return Customers(rpc, api, store)
