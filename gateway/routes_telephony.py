"""The telephony webhook edge: ``POST /telephony/inbound-call`` (SPEC R-INI-4; DESIGN.md,
"Telephony").

A Twilio-compatible provider posts a form (``CallSid``, ``From``, ``To``, …) for every call to a
toll-free number of the pool. The request must carry ``X-Twilio-Signature``: base64
HMAC-SHA1, keyed with ``TELEPHONY_AUTH_TOKEN``, over the full URL followed by every POST
parameter as name+value in name order (Twilio's documented algorithm). The URL is the one
the request reached the gateway with (scheme, Host header, path, query) unless
``TELEPHONY_PUBLIC_BASE_URL`` names the public origin the provider was configured with (a
TLS-terminating proxy in front of the gateway). Missing or wrong → 403 problem, nothing else.

A signed call becomes one normalized ``inbound_call`` message (contracts.telephony) published
to ``telephony.events`` with publisher confirms and the mandatory flag — the broker has the
message, queued for phone_auth, before the provider gets its answer; if it cannot take it the
provider gets a 503 (configure the provider's fallback URL to this path, and it asks again).
The same CallSid posted again publishes again; phone_auth applies a call id once.

The answer rejects the call without answering it: ``<Reject reason="busy"/>`` must be the
*first* verb — with any verb before it (even ``<Pause>``) the provider answers the call and
bills it. The caller hears it ring while the provider waits for our answer, so the ring
delay (``TELEPHONY_RING_DELAY_SECONDS``, default 2.5 s: "2〜3コール後、自動で電話が切れ")
is spent holding the HTTP response — in the response body's iterator, after the Nameko
worker has finished, so waiting calls never occupy the gateway's worker pool. The call is
published before the wait: the customer's page moves on while the phone still rings.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit, urlunsplit

import eventlet
from kombu import Queue
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.standalone.events import get_event_exchange
from werkzeug.wrappers import Response

from contracts import phone_auth as _phone_auth_contract  # noqa: F401  (declares the subscription)
from contracts import telephony
from contracts.errors import DomainError, Unavailable
from contracts.subscriptions import SUBSCRIPTIONS
from gateway.http import api
from services import deployment
from services import logging as tlog

TAGS = ("telephony",)
PATH = "/telephony/inbound-call"
DEV_AUTH_TOKEN = deployment.DEV_TELEPHONY_AUTH_TOKEN   # published: refused in production
DEFAULT_RING_DELAY = 2.5

TWIML_REJECT = ('<?xml version="1.0" encoding="UTF-8"?>'
                '<Response><Reject reason="busy"/></Response>')

_log = tlog.get_logger(service="gateway", edge="webhook")

InvalidSignature = type("InvalidSignature", (DomainError,), {
    "status": 403, "default_code": "invalid_signature",
    "default_detail": "リクエストの署名を確認できませんでした。"})
BadCall = type("BadCall", (DomainError,), {
    "status": 400, "default_code": "invalid_call",
    "default_detail": "着信の情報が不足しています。"})


# -- Twilio's request signature ------------------------------------------------------------------

def twilio_signature(auth_token: str, url: str, params) -> str:
    """base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 …)), names sorted,
    each name's distinct values sorted (as twilio.request_validator computes it)."""
    payload = url
    getlist = getattr(params, "getlist", None)
    for name in sorted(set(params.keys())):
        values = getlist(name) if getlist else [params[name]]
        for value in sorted(set(values)):
            payload += name + value
    digest = hmac.new(auth_token.encode(), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    """The URL as is, without its port, and with the scheme's default port — as Twilio's own
    validator tries them: the provider signs the URL as configured, while a proxy may or may
    not show a port in Host."""
    parts = urlsplit(url)
    variants = [url]
    try:
        port = parts.port
    except ValueError:          # not a number: leave the URL alone
        return variants
    # The host exactly as written (case kept: it is part of what was signed).
    bare = parts.netloc[:parts.netloc.rfind(":")] if port is not None else parts.netloc
    netlocs = [bare]
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if port is None and default is not None:
        netlocs.append(f"{bare}:{default}")
    for netloc in netlocs:
        candidate = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        if candidate not in variants:
            variants.append(candidate)
    return variants


def signature_valid(auth_token: str, url: str, params, given: str | None) -> bool:
    if not given or not auth_token:
        return False
    return any(hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(),
                                   given.strip().encode())
               for candidate in _port_variants(url))


def request_url(request, public_base_url: str | None = None) -> str:
    """The URL the provider signed: as the request reached us (scheme, Host header, raw path,
    raw query), or under the configured public base URL."""
    environ = request.environ
    path = environ.get("RAW_PATH_INFO") or quote(request.path, safe="/%:@!$&'()*+,;=-._~")
    query = environ.get("QUERY_STRING", "")
    tail = path + (f"?{query}" if query else "")
    if public_base_url:
        return public_base_url.rstrip("/") + tail
    return f"{request.scheme}://{request.host}{tail}"


# -- configuration and the publisher ----------------------------------------------------------------

class TelephonyEdge(DependencyProvider):
    """Settings of the webhook edge (Nameko config key, else environment) and the confirmed,
    mandatory publisher of ``inbound_call`` messages.

    The queues of every ``inbound_call`` subscription (contracts) are declared with the
    exchange, as the relay does for stored events, so a call waits in phone_auth's queue
    even while phone_auth is down."""

    def setup(self):
        cfg = self.container.config

        def value(key, default=None):
            raw = cfg.get(key)
            if raw in (None, ""):
                raw = os.environ.get(key)
            return raw if raw not in (None, "") else default

        self.auth_token = str(value("TELEPHONY_AUTH_TOKEN", DEV_AUTH_TOKEN))
        self.public_base_url = value("TELEPHONY_PUBLIC_BASE_URL")
        self.ring_delay = float(value("TELEPHONY_RING_DELAY_SECONDS", DEFAULT_RING_DELAY))
        self.exchange = get_event_exchange(telephony.SOURCE_SERVICE, cfg)
        queues = [Queue(s.queue_name, exchange=self.exchange, routing_key=s.event_type,
                        durable=True, auto_delete=False, exclusive=False)
                  for s in SUBSCRIPTIONS
                  if (s.source_service, s.event_type) == (telephony.SOURCE_SERVICE, telephony.INBOUND_CALL)]
        self.publisher = Publisher(cfg[AMQP_URI_CONFIG_KEY], use_confirms=True, mandatory=True,
                                   serializer="json", declare=[self.exchange, *queues])

    def publish(self, call: telephony.InboundCall, correlation_id: str) -> None:
        """Returns once the broker confirmed the message (raises otherwise)."""
        self.publisher.publish(call.as_message(), exchange=self.exchange,
                               routing_key=telephony.INBOUND_CALL, message_id=str(call.key),
                               headers={"nameko.correlation_id": correlation_id})

    def get_dependency(self, worker_ctx):
        return self


def _rejecting_response(delay: float) -> Response:
    def body():
        if delay > 0:
            eventlet.sleep(delay)     # the phone rings meanwhile; no worker is held
        yield TWIML_REJECT.encode()
    return Response(body(), status=200, mimetype="application/xml")


class TelephonyRoutes:
    """Mixed into ``gateway.service.GatewayService``."""

    telephony_edge = TelephonyEdge()

    @api("POST", PATH, tags=TAGS, max_body=16 * 1024,
         summary="着信通知 (Twilio 互換 Webhook): 電話番号認証の着信を受け付け、応答せずに切断",
         description=(
             "Form-encoded (`application/x-www-form-urlencoded`) provider webhook with `CallSid`, "
             "`From`, `To`. Requires `X-Twilio-Signature` (HMAC-SHA1 of URL + sorted parameters "
             "with `TELEPHONY_AUTH_TOKEN`); 403 `invalid_signature` otherwise. Answers TwiML "
             "`<Response><Reject reason=\"busy\"/></Response>` after the ring delay: the call is "
             "never answered. Withheld callers (`anonymous`, `restricted`, non-numeric) are "
             "passed on as withheld."))
    def telephony_inbound_call(self, req):
        edge = self.telephony_edge
        request = req.request
        form = request.form
        url = request_url(request, edge.public_base_url)
        if not signature_valid(edge.auth_token, url, form, request.headers.get("X-Twilio-Signature")):
            _log.warning("telephony_signature_rejected", correlation_id=req.correlation_id,
                         client_address=req.client.address,
                         signed=bool(request.headers.get("X-Twilio-Signature")))
            raise InvalidSignature()
        call_sid = (form.get("CallSid") or "").strip()
        called = telephony.normalize_phone(form.get("To"))
        if not call_sid or len(call_sid) > 256 or called is None:
            raise BadCall(missing=[n for n, ok in (("CallSid", call_sid), ("To", called)) if not ok])
        caller, withheld = telephony.classify_caller(form.get("From"))
        call = telephony.InboundCall(call_id=call_sid, caller=caller, withheld=withheld,
                                     called=called, received_at=datetime.now(timezone.utc),
                                     edge="webhook")
        try:
            edge.publish(call, req.correlation_id)
        except Exception as exc:   # broker down, unroutable, not confirmed: the provider retries
            _log.error("telephony_publish_failed", correlation_id=req.correlation_id,
                       call_key=str(call.key), error_type=type(exc).__name__)
            raise Unavailable() from None
        _log.info("telephony_inbound_call", correlation_id=req.correlation_id,
                  call_key=str(call.key), withheld=withheld, caller=tlog.mask_phone(caller),
                  called=called)
        return _rejecting_response(edge.ring_delay)
