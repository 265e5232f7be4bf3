"""Typed domain errors with stable codes.

A DomainError raised inside a service crosses Nameko RPC as itself (``deserialize_to_instance``)
so the gateway can turn it into problem+json without knowing any domain rule.
"""
from __future__ import annotations

import json

from nameko.exceptions import deserialize_to_instance


@deserialize_to_instance
class DomainError(Exception):
    """``code`` is stable English snake_case; ``detail`` is Japanese, for the customer."""

    status = 400
    default_code = "bad_request"
    default_detail = "リクエストを処理できませんでした。"

    def __init__(self, detail: str | None = None, code: str | None = None, wire_extra: str | None = None,
                 /, **extra):
        # Nameko rebuilds a remote error as ``cls(*exc.args)`` after stringifying every
        # non-string arg, so the extra fields travel as one JSON string (keeping numbers and
        # booleans) and come back here as the third positional argument.
        if wire_extra:
            extra = {**json.loads(wire_extra), **extra}
        self.code = code or self.default_code
        self.detail = detail or self.default_detail
        self.extra = extra
        super().__init__(self.detail, self.code, json.dumps(extra, ensure_ascii=False, default=str))

    def __reduce__(self):  # keep picklable with keyword arguments
        return (_rebuild, (type(self), self.detail, self.code, self.extra))

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def _rebuild(cls, detail, code, extra):
    return cls(detail, code, **extra)


def _error(name: str, status: int, code: str, detail: str) -> type[DomainError]:
    cls = type(name, (DomainError,), {"status": status, "default_code": code, "default_detail": detail})
    cls.__module__ = __name__
    return deserialize_to_instance(cls)


ValidationFailed = _error("ValidationFailed", 422, "validation_failed", "入力内容に誤りがあります。")
Unauthenticated = _error("Unauthenticated", 401, "unauthenticated", "ログインしてください。")
Forbidden = _error("Forbidden", 403, "forbidden", "この操作は許可されていません。")
NotFound = _error("NotFound", 404, "not_found", "お探しの情報が見つかりません。")
Conflict = _error("Conflict", 409, "conflict", "この手続きは既に完了しているか、順序が正しくありません。")
ConcurrencyConflict = _error(
    "ConcurrencyConflict", 409, "concurrent_update",
    "同じお手続きが同時に行われました。画面を更新してもう一度お試しください。")
Locked = _error(
    "Locked", 423, "credential_locked",
    "ロックされているためご利用いただけません。お取引店またはお問い合わせ窓口にご連絡ください。")
TooEarly = _error("TooEarly", 403, "before_cutover", "初回操作の受付開始前です。開始日時以降にお手続きください。")
Unavailable = _error("Unavailable", 503, "service_unavailable",
                     "ただいまサービスをご利用いただけません。しばらくしてからもう一度お試しください。")

ALL = {c.default_code: c for c in (ValidationFailed, Unauthenticated, Forbidden, NotFound, Conflict,
                                    ConcurrencyConflict, Locked, TooEarly, Unavailable)}
