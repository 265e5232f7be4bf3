"""A whole system of a test module's own: its own database and RabbitMQ vhost, its own
environment (e.g. a 3-second call window) or ``--instances``.

The session ``system`` fixture may be running at the same time on the session database and
vhost: a second ``tsunagi run`` there would compete for the same queues with a different
configuration, and its relay would wait behind the other one's leader lock. So a module that
needs a system configured differently gets one apart, and overrides the ``system`` fixture
(the shared e2e fixtures — ``rpc``, ``api``, ``seed``… — then talk to it):

    @pytest.fixture(scope="module")
    def isolated(settings, tmp_path_factory):
        with isolated_system(settings, tmp_path_factory.mktemp("x"), env={...}) as iso:
            yield iso

    @pytest.fixture(scope="module")
    def system(isolated):
        return isolated.system
"""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path

from services import db
from services.config import Settings
from tests import vhosts
from tests.e2e.conftest import System, _alive, start_system


@dataclass
class Isolated:
    system: System
    database_url: str
    amqp_uri: str

    def store(self, max_size: int = 4):
        from services.eventstore import open_store
        return open_store(Settings(), max_size=max_size, database_url=self.database_url)


@contextlib.contextmanager
def isolated_system(settings: Settings, workdir: Path, *, env: dict | None = None, instances: int = 1):
    name = f"tsunagi_e2e_{uuid.uuid4().hex[:10]}"
    db.setup(settings, name, log=lambda *_: None)
    made = vhosts.create(name)
    amqp = vhosts.uri_for(settings.amqp_uri, name) if made else settings.amqp_uri
    url = db.url_for(settings.database_url, name)
    overrides = {"DATABASE_URL": url, "AUDITOR_DATABASE_URL": db.url_for(settings.auditor_database_url, name),
                 "AMQP_URI": amqp, **(env or {})}
    system = None
    try:
        system = start_system(workdir, env=overrides, instances=instances)
        yield Isolated(system, url, amqp)
        pids = system.child_pids()
        code = system.terminate()
        left = [n for n, pid in pids.items() if _alive(pid)]
        assert code == 0 and not left, f"unclean stop: exit {code}, still running {left}\n{system.log.tail()}"
    finally:
        if system is not None and system.returncode is None:
            system.terminate()
        if made:
            vhosts.delete(name)
        with contextlib.suppress(Exception):
            db.drop_database(settings, name)
