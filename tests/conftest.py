"""Test set-up shared by every suite.

Eventlet must patch the standard library before anything else is imported (Nameko runs on
it; plain pytest otherwise hangs). Each test session gets its own fresh database, so a run
never sees another run's events; tests that tamper with the log take a scratch database.
"""
import eventlet

eventlet.monkey_patch()

import atexit  # noqa: E402
import os  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_selector")

from services import db, nameko_setup  # noqa: E402
from tests import vhosts  # noqa: E402
from services.config import Settings  # noqa: E402

nameko_setup.install(green=True)   # services run in-process by tests behave as launched ones do

SESSION_DB = f"tsunagi_test_{os.getpid()}"
_base = Settings()
os.environ["DATABASE_URL"] = db.url_for(_base.database_url, SESSION_DB)
os.environ["AUDITOR_DATABASE_URL"] = db.url_for(_base.auditor_database_url, SESSION_DB)

# A RabbitMQ virtual host of its own per test session: two runs on one broker (or a running
# `make run`) never answer each other's RPC calls or steal each other's events.
SESSION_VHOST = SESSION_DB
_vhost_made = False
if not os.environ.get("TSUNAGI_TEST_SHARED_VHOST"):
    _vhost_made = vhosts.create(SESSION_VHOST)
    if _vhost_made:
        os.environ["AMQP_URI"] = vhosts.uri_for(_base.amqp_uri, SESSION_VHOST)
        atexit.register(vhosts.delete, SESSION_VHOST)


@pytest.fixture(scope="session")
def settings():
    s = Settings()
    db.setup(s, SESSION_DB, log=lambda *_: None)
    yield s
    if not os.environ.get("KEEP_TEST_DB"):
        db.drop_database(s, SESSION_DB)


@pytest.fixture(scope="session")
def store(settings):
    from services.eventstore import open_store
    st = open_store(settings, max_size=12)
    yield st
    st.pool.close()


@pytest.fixture
def scratch_db(settings):
    """A database of its own for tests that tamper with the log. Yields its service URL."""
    name = f"tsunagi_scratch_{uuid.uuid4().hex[:10]}"
    db.setup(settings, name, log=lambda *_: None)
    yield db.url_for(settings.database_url, name)
    db.drop_database(settings, name)


@pytest.fixture
def scratch_store(settings, scratch_db):
    from services.eventstore import open_store
    st = open_store(settings, database_url=scratch_db, max_size=8)
    yield st
    st.pool.close()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"
