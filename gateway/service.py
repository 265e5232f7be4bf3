"""The gateway service: ``nameko run gateway.service``.

Route authors add their mixin (e.g. ``MigrationRoutes`` from ``gateway/routes_migration.py``)
to the bases below, one line each; ``gateway/http.py`` describes what ``@api`` does for them.
"""
from __future__ import annotations

from nameko.rpc import RpcProxy

from gateway.health import HealthProbe, HealthRoutes
from gateway.http import routes_of
from gateway.openapi import OpenApiRoutes
from gateway.routes_credentials import CredentialRoutes
from gateway.routes_login import LoginRoutes
from gateway.routes_migration import MigrationRoutes
from gateway.routes_otp import OtpRoutes
from gateway.routes_pc import PcRoutes
from gateway.routes_telephony import TelephonyRoutes
from gateway.routes_web import WebRoutes
from gateway.routes_webauthn import WebAuthnRoutes
from gateway.sessions import SessionProvider
from services.dependencies import Config, EventStoreProvider


class GatewayService(
    HealthRoutes,
    OpenApiRoutes,
    TelephonyRoutes,
    MigrationRoutes, LoginRoutes,
    CredentialRoutes,
    OtpRoutes,
    PcRoutes,
    WebRoutes,
    WebAuthnRoutes,
):
    name = "gateway"

    identity = RpcProxy("identity")
    secret_questions = RpcProxy("secret_questions")
    otp_service = RpcProxy("otp_service")
    phone_auth = RpcProxy("phone_auth")
    notifier = RpcProxy("notifier")

    sessions = SessionProvider()
    store = EventStoreProvider()
    config = Config()
    health_probe = HealthProbe()


# Two mixins declaring the same method and path would silently shadow one another in
# werkzeug's map; refuse to start instead.
routes_of(GatewayService)

# `nameko run gateway.service` starts every class in this module's namespace that has
# entrypoints, so the route mixins must be bases of GatewayService only, not names here.
for _base in GatewayService.__mro__[1:]:
    if globals().get(_base.__name__) is _base:
        del globals()[_base.__name__]
del _base
