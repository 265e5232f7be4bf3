"""The reference web front end (issue 8): its files, the browser's session and the demo phone.

- ``GET /`` is the single page (``gateway/static/index.html``); ``GET /static/<name>`` its
  script and style sheet. A strict Content-Security-Policy (scripts and styles from this
  origin only, nothing inline) goes with the page; assets are cached for a year under a
  ``?v=<content hash>`` the page is rendered with, so a release is picked up at once.
- ``POST /api/v1/logout`` ends the session (bearer or cookie) and clears the cookies;
  ``GET /api/v1/session`` tells a reloaded page whether it still has one. The cookie itself is
  set by ``gateway.web_session`` for requests that ask for it (``X-Session-Transport``).
- ``POST /api/v1/demo/inbound-call``: with ``DEMO_MODE=1`` only (404 otherwise), the phone
  screen's 「デモ: 電話をかける」 button places the call a customer would make from the chosen
  registered number — the same ``inbound_call`` message the signed provider webhook
  publishes. There is no phone on a developer's machine; ``tsunagi demo call`` does the same
  through the real webhook with a correct signature.
"""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
import uuid
from datetime import datetime, timezone
from pathlib import Path

from marshmallow import fields
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from contracts import telephony
from contracts.errors import NotFound, Unavailable, ValidationFailed
from gateway import web_session
from gateway.http import api, session_token_of
from gateway.rpc import rpc_call
from gateway.schemas import BaseSchema, Str

TAGS = ("web",)
STATIC_DIR = Path(__file__).resolve().parent / "static"
PAGE = "index.html"
ASSET_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
               ".webmanifest": "application/manifest+json"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "publickey-credentials-create=(self), publickey-credentials-get=(self), "
                          "camera=(), microphone=(), geolocation=()",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
MSG_DEMO_OFF = "この機能はデモ環境でのみご利用いただけます。"


class _Assets:
    """The files of gateway/static, read once per process (they ship with the package)."""

    def __init__(self, directory: Path = STATIC_DIR):
        self.files: dict[str, tuple[bytes, str]] = {}
        self.gzipped: dict[str, bytes] = {}
        for path in sorted(directory.iterdir()):
            if path.is_file() and path.name != PAGE and not path.name.startswith("."):
                ctype = ASSET_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                self.files[path.name] = (path.read_bytes(), ctype)
                if ctype.startswith(("text/", "image/svg")):
                    self.gzipped[path.name] = gzip.compress(self.files[path.name][0], compresslevel=9, mtime=0)
        digest = hashlib.sha256()
        for name, (data, _) in sorted(self.files.items()):
            digest.update(name.encode() + b"\0" + data)
        self.version = digest.hexdigest()[:12]
        self.page_template = (directory / PAGE).read_text(encoding="utf-8").replace("__V__", self.version)
        self.pages = {demo: self.page_template.replace("__DEMO__", "1" if demo else "0").encode("utf-8")
                      for demo in (False, True)}
        self.gzipped_pages = {demo: gzip.compress(page, compresslevel=9, mtime=0) for demo, page in self.pages.items()}

    def page(self, demo: bool, request=None) -> tuple[bytes, bool]:
        if request is not None and accepts_gzip(request):
            return self.gzipped_pages[demo], True
        return self.pages[demo], False

    def asset(self, name: str, request) -> tuple[bytes, str, bool] | None:
        found = self.files.get(name)
        if found is None:
            return None
        if name in self.gzipped and accepts_gzip(request):
            return self.gzipped[name], found[1], True
        return found[0], found[1], False


def accepts_gzip(request) -> bool:
    return request.accept_encodings["gzip"] > 0       # quality 0 ("gzip;q=0") means no


def _encoded(response: Response, gzipped: bool) -> None:
    response.headers["Vary"] = "Accept-Encoding"
    if gzipped:
        response.headers["Content-Encoding"] = "gzip"


_assets: _Assets | None = None


def assets() -> _Assets:
    global _assets
    if _assets is None:
        _assets = _Assets()
    return _assets


def demo_mode(config) -> bool:
    return web_session.flag(config, "DEMO_MODE", False)


class SessionInfo(BaseSchema):
    kind = fields.String(required=True, metadata={"description": "migration | customer"})
    expires_at = fields.String(metadata={"description": "ISO 8601; the idle expiry slides with requests, at most every 30 s (a session may end up to 30 s early)"})


class DemoCallRequest(BaseSchema):
    phone_id = Str(ident=True, metadata={"description": "GET /api/v1/me/phones の phone_id（発信元）"})
    call_to = Str(ident=True, max_len=32, metadata={"description": "認証先電話番号（call_to）"})


class DemoCallResult(BaseSchema):
    call_id = fields.String(required=True)
    call_to = fields.String(required=True)


class ContainerConfig(DependencyProvider):
    """The Nameko config of the container (``DEMO_MODE``, ``SESSION_COOKIE_SECURE``, ...);
    web_session falls back to the environment for keys it does not hold."""

    def get_dependency(self, worker_ctx):
        return self.container.config


class WebRoutes:
    """Mixed into ``gateway.service.GatewayService`` (which provides ``sessions``,
    ``identity`` and ``telephony_edge``)."""

    web_config = ContainerConfig()

    @api("GET", "/", tags=TAGS, summary="Web画面（スマートフォン・パソコン）",
         description="The single page of the reference front end (text/html).")
    def web_page(self, req):
        page, gzipped = assets().page(demo_mode(self.config_values()), req.request)
        response = Response(page, status=200, content_type="text/html; charset=utf-8")
        _encoded(response, gzipped)
        response.headers.update(PAGE_HEADERS)
        response.headers["Cache-Control"] = REVALIDATE
        response.add_etag()
        return response.make_conditional(req.request)

    @api("GET", "/static/<name>", tags=TAGS, summary="Web画面の静的ファイル",
         description="Script, style sheet and icon of the front end; cached for a year when "
                     "requested with the current `?v=` version.")
    def web_asset(self, req):
        found = assets().asset(req.path["name"], req.request)
        if found is None:
            raise NotFound()
        data, ctype, gzipped = found
        response = Response(data, status=200, content_type=ctype)
        _encoded(response, gzipped)
        response.headers.update(PAGE_HEADERS)
        response.headers["Cache-Control"] = (IMMUTABLE if req.request.args.get("v") == assets().version
                                             else REVALIDATE)
        response.add_etag()
        return response.make_conditional(req.request)

    @api("GET", "/api/v1/session", response=SessionInfo, auth="any", tags=TAGS,
         summary="現在のセッション（Web画面の再読み込み時）")
    def current_session(self, req):
        """The kind of the live session this request carries (401 when none)."""
        s = req.session
        return {"kind": s.kind, "expires_at": s.expires_at.isoformat() if s.expires_at else None}

    @api("POST", "/api/v1/logout", auth="any", status=204, tags=TAGS, summary="ログアウト")
    def logout(self, req):
        """Revokes the session (bearer or cookie) and clears the browser's cookies."""
        self.sessions.revoke(session_token_of(req.request))
        response = Response(status=204)
        web_session.clear_session_cookies(response, self.config_values())
        return response

    @api("POST", "/api/v1/demo/inbound-call", body=DemoCallRequest, response=DemoCallResult, auth="any",
         status=202, tags=TAGS, summary="デモ環境のみ: 登録電話番号から認証先電話番号への発信を模擬")
    def demo_inbound_call(self, req):
        """Only with `DEMO_MODE=1` (otherwise 404 `not_found`): publishes the inbound call the
        customer would place from the registered number `phone_id` to `call_to`, as the
        telephony webhook does for a real call."""
        if not demo_mode(self.config_values()):
            raise NotFound(MSG_DEMO_OFF, "demo_mode_off")
        called = telephony.normalize_phone(req.body["call_to"])
        if called is None:
            raise ValidationFailed(errors={"call_to": ["認証先電話番号が正しくありません。"]})
        phone = rpc_call(self.identity.phone, req.session.customer_number, req.body["phone_id"])
        caller, withheld = telephony.classify_caller(phone["e164"])
        call = telephony.InboundCall(call_id=f"DEMO{uuid.uuid4().hex}", caller=caller, withheld=withheld,
                                     called=called, received_at=datetime.now(timezone.utc), edge="webhook")
        try:
            self.telephony_edge.publish(call, req.correlation_id)
        except Exception:
            raise Unavailable() from None
        return {"call_id": call.call_id, "call_to": req.body["call_to"]}

    def config_values(self):
        return self.web_config
