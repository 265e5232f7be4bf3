"""The Select E-mail service (セレクトEメールサービス) and the mail-password destinations — the
notifier's RPCs (SPEC R-MAIL-4, R-MAIL-5; PC guide 「メールアドレスの追加方法」「メール通知パスワード
送信先の設定方法」). A mixin of ``notifier.service.NotifierService``.

A change is decided twice: once before anything is checked (a form that changes nothing or
repeats an address is refused without spending the customer's code or counting a password),
then — after otp_service authorized exactly this change with the confirmation password and
the OTP or mail notification password — on the stream as it is now, appended with the
expected version. A new mail-password destination then gets a code of its own
(``address_confirmation``), mailed to that address only; entering it with the confirmation
password completes the destination (one pending address at a time, select 1 first).
Addresses are logged masked only.
"""
from __future__ import annotations

import re

from marshmallow import ValidationError
from nameko.rpc import RpcProxy
from nameko.rpc import rpc as nameko_rpc

from contracts import mail_otp as mo
from contracts import notifier as contract
from contracts.errors import ConcurrencyConflict, Conflict, DomainError, ValidationFailed
from notifier import addresses, addresses_projection
from services.dependencies import RequestContext
from services.logging import mask_email
from services.rpc import rpc_call

rpc = nameko_rpc(expected_exceptions=(DomainError,))

MAX_ATTEMPTS = 5
_CUSTOMER_NUMBER = re.compile(r"^[0-9]{10}\Z")
MSG_FORM = "入力内容に誤りがあります。各項目のメッセージをご確認ください。"


def _customer_number(value) -> str:
    if not isinstance(value, str) or not _CUSTOMER_NUMBER.match(value):
        raise ValidationFailed("お客さま番号が正しくありません。", "customer_number_invalid")
    return value


def _load(schema_cls, payload) -> dict:
    try:
        return schema_cls().load(payload if isinstance(payload, dict) else {})
    except ValidationError as exc:
        errors = {k: (v if isinstance(v, list) else [str(v)]) for k, v in exc.normalized_messages().items()}
        raise ValidationFailed(MSG_FORM, "validation_failed", errors=errors) from None


def _masked_events(events) -> list[dict]:
    return [{"type": e.type, "slot": e.data.get("slot"), "address": mask_email(e.data.get("address"))}
            for e in events]


class SelectEmailMixin:
    context = RequestContext()
    otp_service = RpcProxy("otp_service")

    def _book(self, number: str) -> tuple[str | None, addresses.Book]:
        book = addresses.fold(self.store.read_stream(contract.address_stream(number)))
        with self.store.pool.connection() as conn:
            registered, _ = addresses_projection.load(conn, self.store.keyring, number)
        return registered, book

    def _decide(self, number: str, decide) -> tuple[str | None, addresses.Book, list]:
        stream = contract.address_stream(number)
        for _ in range(MAX_ATTEMPTS):
            registered, book = self._book(number)
            events = decide(registered, book)
            try:
                with self.store.transaction() as conn:
                    self.store.append(stream, events, book.version, self.context, conn=conn)
                    addresses_projection.project(conn, self.store.keyring, number, events)
                return registered, addresses.fold(events, book), events
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(stream=stream)

    # -- reading ----------------------------------------------------------------------------------------

    @rpc
    def notification_addresses(self, customer_number):
        registered, book = self._book(_customer_number(customer_number))
        return addresses.view(registered, book)

    @rpc
    def mail_otp_destinations(self, customer_number):
        """Where a mail notification password would go now (masked); refuses when nowhere."""
        number = _customer_number(customer_number)
        with self.store.pool.connection() as conn:
            registered, book = addresses_projection.load(conn, self.store.keyring, number)
        recipients = addresses.mail_otp_recipients(registered, book, mo.TO_DESTINATIONS)
        if not recipients:
            raise Conflict(addresses.MSG_NO_DESTINATION, addresses.CODE_NO_DESTINATION)
        return {"destinations": [mask_email(address) for _, address in recipients]}

    # -- changing (R-MAIL-4, R-MAIL-5) -----------------------------------------------------------------

    @rpc
    def change_select_addresses(self, customer_number, body):
        number = _customer_number(customer_number)
        body = _load(contract.ChangeAddressesRequest, body)
        requested = {name: body.get(name) for name in addresses.SLOTS}

        def change(authorization_id):
            def decide(registered, book):
                return addresses.decide_change(addresses.ChangeSelectAddresses(
                    number, requested, registered, authorization_id, self.clock.now()), book)
            return decide

        registered, book = self._book(number)
        change(None)(registered, book)          # refuses no change / a repeated address, spending nothing
        authorization = rpc_call(self.otp_service.authorize, number, addresses.change_operation(requested),
                                 body["confirmation_password"], otp=body.get("otp"), mail_otp=body.get("mail_otp"))
        registered, book, events = self._decide(number, change(authorization["authorization_id"]))
        self.log.info("select_addresses_changed", authorization_id=authorization["authorization_id"],
                      changes=_masked_events(events))
        result = addresses.view(registered, book)
        if any(e.type == contract.MAIL_OTP_DESTINATION_REQUESTED.name for e in events) \
                and addresses.pending_slot(book):
            result["confirmation_sent_to"] = self._send_confirmation(number, book)["destinations"]
        return result

    @rpc
    def request_destination_confirmation(self, customer_number):
        """Send (again) the code that confirms the pending mail-password destination."""
        number = _customer_number(customer_number)
        _, book = self._book(number)
        return self._send_confirmation(number, book)

    def _send_confirmation(self, number: str, book: addresses.Book) -> dict:
        operation = addresses.confirmation_operation(book)
        issued = rpc_call(self.otp_service.issue_mail_otp, number, mo.ADDRESS_CONFIRMATION, operation)
        return {"issue_id": issued["issue_id"], "purpose": mo.ADDRESS_CONFIRMATION,
                "expires_at": issued["expires_at"], "destinations": [mask_email(operation["address"])]}

    @rpc
    def confirm_mail_otp_destination(self, customer_number, body):
        number = _customer_number(customer_number)
        body = _load(contract.ConfirmDestinationRequest, body)
        _, book = self._book(number)
        operation = addresses.confirmation_operation(book)
        authorization = rpc_call(self.otp_service.authorize, number, operation, body["confirmation_password"],
                                 mail_otp=body["mail_otp"])

        def decide(registered, book):
            return addresses.decide_confirm(addresses.ConfirmDestination(
                number, operation["slot"], operation["address"], authorization["authorization_id"],
                self.clock.now()), book)

        registered, book, events = self._decide(number, decide)
        self.log.info("mail_otp_destination_confirmed", authorization_id=authorization["authorization_id"],
                      changes=_masked_events(events))
        result = addresses.view(registered, book)
        if addresses.pending_slot(book):       # the other select address waits too: its code now
            result["confirmation_sent_to"] = self._send_confirmation(number, book)["destinations"]
        return result
