"""PC customers: who needs what, the mail notification password, transaction authorization and
the Select E-mail service (SPEC R-MAIL-1…5; PC guide; paths and fields as ``shared/API.md``).

The gateway orchestrates only. otp_service decides who needs which second factor, issues and
checks mail notification passwords and records authorizations; the notifier owns the
addresses and the mails. Two orchestrations happen here:
- ``POST /api/v1/mail-otp`` asks the notifier first where a code would go, so a customer
  without a destination is told so instead of waiting for a mail that never comes, and the
  answer can show the (masked) destinations;
- ``purpose: address_confirmation`` re-sends the code for a new mail-password destination:
  the notifier knows the pending address, so it asks otp_service for that code itself.
"""
from __future__ import annotations

from contracts import mail_otp as mo
from contracts import notifier as notifier_contract
from gateway.http import api
from gateway.rpc import rpc_call

TAGS = ("pc",)


class PcRoutes:
    """Mixed into ``gateway.service.GatewayService`` (which provides ``otp_service`` and ``notifier``)."""

    @api("GET", "/api/v1/me/authorization-method", response=mo.AuthorizationMethod, auth="customer",
         tags=TAGS, summary="お取引の認証に必要な項目（ワンタイムパスワード／メール通知パスワード）")
    def authorization_method(self, req):
        """Which second factor this customer enters with the confirmation password, so a PC front
        end shows the right fields: `otp` when an OTP token is active; `mail_otp` when none is
        (never applied, or released — e.g. for a phone change — until a new one is active;
        R-MAIL-1, R-MAIL-2). `fields` names the body fields of
        `POST /api/v1/transactions/authorize`; `mail_otp_locked` tells that the mail
        notification password is locked (R-RBA-2)."""
        return rpc_call(self.otp_service.authorization_method, req.session.customer_number)

    @api("POST", "/api/v1/mail-otp", body=mo.MailOtpRequest, response=mo.MailOtpIssued, auth="customer",
         status=202, tags=TAGS, summary="メール通知パスワードの発行（メール送信）")
    def issue_mail_otp(self, req):
        """Issues a fresh one-time code for one purpose and one operation and mails it from
        `otp-auth.net` to the registered address and every select address that is used and
        chosen to receive it; the mail states what it authorizes. The newest code supersedes
        older ones; it expires (default 10 minutes), is single-use, and 5 wrong entries void it.
        `address_confirmation` (no `operation`) re-sends the code for a new mail-password
        destination to that address only. Problems: `mail_otp_not_needed` (409, OTP users),
        `no_mail_otp_destination` (409), `mail_otp_locked` (423), `operation_invalid` (422)."""
        number, purpose = req.session.customer_number, req.body["purpose"]
        if purpose == mo.ADDRESS_CONFIRMATION:
            return rpc_call(self.notifier.request_destination_confirmation, number)
        destinations = rpc_call(self.notifier.mail_otp_destinations, number)["destinations"]
        issued = rpc_call(self.otp_service.issue_mail_otp, number, purpose, req.body.get("operation"))
        return {"issue_id": issued["issue_id"], "purpose": issued["purpose"], "expires_at": issued["expires_at"],
                "destinations": destinations}

    @api("POST", "/api/v1/transactions/authorize", body=mo.AuthorizeRequest, response=mo.AuthorizationResult,
         auth="customer", tags=TAGS, summary="お取引の認証（確認用パスワード＋ワンタイムパスワード／メール通知パスワード）")
    def authorize_transaction(self, req):
        """Checks the confirmation password and the OTP (OTP users) or the latest mail
        notification password bound to exactly this operation, records the authorization and
        sends the 取引受付メール from `am-bk.co.jp` to the registered address and every used
        select address. Problems: `otp_required` / `mail_otp_required` (422, the other factor is
        needed), `mail_otp_invalid`, `mail_otp_other_operation`, `mail_otp_superseded`,
        `mail_otp_expired`, `mail_otp_used`, `mail_otp_voided` (401), `mail_otp_not_issued`
        (409), `mail_otp_locked` / `credential_locked` (423)."""
        body = req.body
        return rpc_call(self.otp_service.authorize, req.session.customer_number, body["operation"],
                        body["confirmation_password"], otp=body.get("otp"), mail_otp=body.get("mail_otp"))

    @api("GET", "/api/v1/notification-addresses", response=notifier_contract.NotificationAddresses,
         auth="customer", tags=TAGS, summary="セレクトEメールサービスの登録内容")
    def notification_addresses(self, req):
        """The registered address and select addresses 1 and 2: used or not, confirmed
        mail-password destination or not, and a destination waiting for its code."""
        return rpc_call(self.notifier.notification_addresses, req.session.customer_number)

    @api("PUT", "/api/v1/notification-addresses", body=notifier_contract.ChangeAddressesRequest,
         response=notifier_contract.NotificationAddresses, auth="customer", tags=TAGS,
         summary="セレクトEメールサービス利用変更・メール通知パスワード送信先の設定")
    def change_notification_addresses(self, req):
        """Up to two select addresses (R-MAIL-4). Needs the confirmation password and the mail
        notification password issued for exactly this change (`purpose: settings_change`,
        `operation: {setting: "select_email", changes: {select1, select2}}`), or the OTP for OTP
        users (R-MAIL-5). A removed or replaced address is told by mail. A new mail-password
        destination is only requested here: a code is mailed to it (`confirmation_sent_to`) and
        `POST /api/v1/notification-addresses/confirmation` completes it. Problems: `no_change`,
        `duplicate_address` (422) and those of `POST /api/v1/transactions/authorize`."""
        return rpc_call(self.notifier.change_select_addresses, req.session.customer_number, req.body)

    @api("POST", "/api/v1/notification-addresses/confirmation",
         body=notifier_contract.ConfirmDestinationRequest, response=notifier_contract.NotificationAddresses,
         auth="customer", tags=TAGS, summary="メール通知パスワード送信先の確定（新しい送信先に届いたパスワードで）")
    def confirm_notification_address(self, req):
        """Completes a new mail-password destination with the confirmation password and the
        mail notification password that was sent to that new address (R-MAIL-5). With both
        select addresses waiting, select 1 comes first and the code for select 2 is sent next.
        Problems: `no_pending_destination` (409) and those of the authorization."""
        return rpc_call(self.notifier.confirm_mail_otp_destination, req.session.customer_number, req.body)
