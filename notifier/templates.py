"""The mail catalogue and the recipes that turn an event into mails.

Adding a kind of mail means: a ``Template`` here, a recipe ``orders_for_<event>(event) ->
[MailOrder]`` choosing recipients (one order per address, each with its own ``slot`` so each
gets its own mail id and Message-ID), a subscription in ``contracts.notifier`` and a
three-line handler in ``notifier.service``. Queuing, rendering, SMTP, retries and exactly-once
delivery are shared.

Mails of the PC guide (R-MAIL-1…5): the mail notification password (from otp-auth.net) states
what it authorizes — amount and payee, or which setting — so a customer notices a substituted
operation; the 取引受付メール and the removal notice come from am-bk.co.jp.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from contracts import mail_otp as mo
from contracts.events import RecordedEvent
from notifier.mail import Template

SIGNATURE = """\
――――――――――――――――――――――――――――――
株式会社青森みちのく銀行
<青森みちのく>つないでネ！ット
https://www.am-bk.co.jp/
※このメールは送信専用アドレスから送信しています。
　ご返信いただいてもお答えできませんのでご了承ください。
――――――――――――――――――――――――――――――
"""

# R-INI-5, smartphone guide 手順6: 「青森みちのく銀行トークン発行のご案内」 with Service ID (B) and
# User ID (C); the activation password (A) is never mailed.
TOKEN_ISSUED = Template(
    name="token_issued",
    sender="otp",
    subject="【青森みちのく銀行】トークン発行のご案内",
    body="""\
青森みちのく銀行をご利用いただき、誠にありがとうございます。

ワンタイムパスワードのトークンを発行いたしました。
ワンタイムパスワードアプリの初期設定で、以下の「サービスID」「ユーザID」と、
お申し込みの際にご登録いただいた「利用開始パスワード」を入力してください。

■トークン情報
　サービスID：{service_id}
　ユーザID　：{user_id}

【ご留意事項】
・「サービスID」「ユーザID」「利用開始パスワード」は、ワンタイムパスワードの
　初期設定の完了後は使用しません。
・利用開始パスワードは、このメールには記載しておりません。
・このメールにお心当たりのない場合は、お手数ですが、お取引店または
　お問い合わせ窓口までご連絡ください。

""" + SIGNATURE,
    params_required=("service_id", "user_id"),
)

# R-MAIL-1, R-MAIL-3: 「メール通知パスワード」, from otp-auth.net, naming the operation it authorizes.
MAIL_OTP = Template(
    name="mail_otp",
    sender="otp",
    subject="【青森みちのく銀行】メール通知パスワードのお知らせ",
    body="""\
青森みちのく銀行をご利用いただき、誠にありがとうございます。

ご依頼いただいたお手続きのメール通知パスワードをお知らせします。
お取引画面の「メール通知パスワード」欄に入力してください。

■メール通知パスワード
　{code}

■このメール通知パスワードでお手続きいただける内容
{operation_text}

■有効期限
　{expires_at}まで（発行から{ttl_minutes}分間）

【ご留意事項】
・メール通知パスワードは1回限り、上記のお手続きにだけ有効です。
・新しいメール通知パスワードを発行すると、それまでのメール通知パスワードは
　無効になります。必ず最新のメール通知パスワードを入力してください。
・上記の内容がお客さまの操作と異なる場合や、お心当たりのない場合は、
　メール通知パスワードを入力せず、お取引を中止して、至急お取引店または
　お問い合わせ窓口までご連絡ください。
・当行の行員がメール通知パスワードをお尋ねすることはありません。

""" + SIGNATURE,
    params_required=("code", "operation_text", "expires_at", "ttl_minutes"),
)

# 取引受付メール, from am-bk.co.jp, to the registered address and every used select address.
TRANSACTION_ACCEPTED = Template(
    name="transaction_accepted",
    sender="bank",
    subject="【青森みちのく銀行】{title}",
    body="""\
青森みちのく銀行をご利用いただき、誠にありがとうございます。

以下のお手続きを受け付けました。

■受付日時
　{accepted_at}

■受付番号
　{reference}

■お手続きの内容
{operation_text}

■ご本人確認の方法
　確認用パスワード・{method_text}

【ご留意事項】
・このメールは、登録メールアドレスと、セレクトEメールサービスでご利用中の
　メールアドレスにお送りしています。
・お心当たりのない場合は、至急お取引店またはお問い合わせ窓口までご連絡ください。

""" + SIGNATURE,
    params_required=("title", "accepted_at", "reference", "operation_text", "method_text"),
)

# R-MAIL-4: an address removed from (or replaced in) the Select E-mail service is told so.
SELECT_ADDRESS_REMOVED = Template(
    name="select_address_removed",
    sender="bank",
    subject="【青森みちのく銀行】セレクトEメールサービス登録解除のお知らせ",
    body="""\
青森みちのく銀行をご利用いただき、誠にありがとうございます。

このメールアドレスは、{removed_at}に、インターネットバンキングの
セレクトEメールサービスの{slot_label}から{reason_text}されました。
今後、このメールアドレスに取引受付メールやメール通知パスワードは届きません。

【ご留意事項】
・お心当たりのない場合は、至急お取引店またはお問い合わせ窓口までご連絡ください。

""" + SIGNATURE,
    params_required=("removed_at", "slot_label", "reason_text"),
)

TEMPLATES: dict[str, Template] = {t.name: t for t in (TOKEN_ISSUED, MAIL_OTP, TRANSACTION_ACCEPTED,
                                                      SELECT_ADDRESS_REMOVED)}


@dataclass(frozen=True)
class MailOrder:
    """One mail to queue for an event."""
    template: str
    to: tuple[str, ...]
    params: dict
    customer_number: str | None
    slot: str = ""                       # "" = the event's one mail
    extra: dict = field(default_factory=dict)
    # Data-key subject sealing the mail's recipients and values in the log (default: the
    # customer). A mail notification password is sealed under its code's own subject, which
    # otp_service destroys once the code is no longer valid (contracts.mail_otp).
    subject: str | None = None


def _address(value) -> str | None:
    # A shredded customer's address reads "[redacted]": nothing to send to.
    return value if isinstance(value, str) and "@" in value else None


def orders_for_token_issued(event: RecordedEvent) -> list[MailOrder]:
    d = event.data
    to = _address(d.get("email"))
    if to is None:
        return []
    return [MailOrder(template=TOKEN_ISSUED.name, to=(to,), customer_number=d.get("customer_number"),
                      params={"service_id": d["service_id"], "user_id": d["user_id"]})]


# -- describing an operation in a mail (R-MAIL-1: the mail states what it authorizes) ------------------

JST = timezone(timedelta(hours=9), "JST")
ACCOUNT_TYPES = {"ordinary": "普通", "current": "当座", "savings": "貯蓄"}
SLOT_LABELS = {"select1": "セレクトメールアドレス1", "select2": "セレクトメールアドレス2",
               mo.REGISTERED: "登録メールアドレス"}
SETTING_LABELS = {mo.SELECT_EMAIL: "セレクトEメールサービスの変更"}
METHOD_TEXT = {mo.METHOD_OTP: "ワンタイムパスワード", mo.METHOD_MAIL_OTP: "メール通知パスワード"}


def jst(value) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    moment = moment.astimezone(JST)
    return f"{moment.year}年{moment.month}月{moment.day}日 {moment.hour:02d}:{moment.minute:02d}"


def yen(amount: int) -> str:
    return f"{amount:,}円"


def describe_operation(op: dict) -> str:
    """The operation in the customer's words, one indented line per item."""
    kind = op.get("type")
    if kind == mo.TRANSFER:
        payee = op["payee"]
        return "\n".join((
            "　お取引　　：お振込",
            f"　振込金額　：{yen(op['amount'])}",
            f"　振込先　　：金融機関コード {payee['bank_code']}　支店番号 {payee['branch_code']}",
            f"　　　　　　　{ACCOUNT_TYPES.get(payee['account_type'], payee['account_type'])}　{payee['account_number']}",
            f"　受取人名　：{payee['name']}"))
    if kind == mo.SETTINGS_CHANGE and op.get("setting") == mo.SELECT_EMAIL:
        lines = ["　お手続き　：セレクトEメールサービスの変更"]
        for name in mo.SELECT_SLOTS:
            slot = op["changes"][name]
            if slot["address"] is None:
                lines.append(f"　{SLOT_LABELS[name]}：登録なし")
                continue
            lines.append(f"　{SLOT_LABELS[name]}：{slot['address']}")
            lines.append(f"　　利用状況：{'利用する' if slot['enabled'] else '利用しない'}　"
                         f"メール通知パスワード送信先：{'利用する' if slot['receives_mail_otp'] else '利用しない'}")
        return "\n".join(lines)
    if kind == mo.SETTINGS_CHANGE:
        lines = [f"　お手続き　：各種利用設定の変更（{SETTING_LABELS.get(op['setting'], op['setting'])}）"]
        lines += [f"　　{key}：{value}" for key, value in sorted(op.get("changes", {}).items())]
        return "\n".join(lines)
    if kind == mo.ADDRESS_CONFIRMATION:
        return "\n".join((
            "　お手続き　：メール通知パスワード送信先の設定",
            f"　{SLOT_LABELS[op['slot']]}：{op['address']}",
            "　このメールアドレスを、メール通知パスワードの送信先として登録します。"))
    return "　（お手続きの内容を表示できません）"


def _is_code(value) -> bool:
    return isinstance(value, str) and len(value) == 6 and value.isdigit()


def orders_for_mail_otp(event: RecordedEvent, recipients: list[tuple[str, str]]) -> list[MailOrder]:
    """R-MAIL-1: one mail per recipient (registered, select1, select2), each its own Message-ID.
    A code whose key is already destroyed (superseded before the notifier saw it) reads as
    redacted: it is no longer valid, so it is not sent at all."""
    d = event.data
    if not _is_code(d.get("code")) or not isinstance(d.get("operation"), dict):
        return []
    subject = d.get("key_subject") or mo.code_subject(d["issue_id"])
    # ``key_subject`` travels in the params so every delivery attempt can ask the database
    # (not a process cache) whether the code is still alive: a dead code is never sent late.
    params = {"code": d["code"], "operation_text": describe_operation(d["operation"]),
              "expires_at": jst(d["expires_at"]), "ttl_minutes": max(int(d.get("ttl_seconds", 600)) // 60, 1),
              "key_subject": subject}
    return [MailOrder(template=MAIL_OTP.name, to=(address,), params=params, customer_number=d["customer_number"],
                      slot=role, subject=subject) for role, address in recipients]


def orders_for_operation_authorized(event: RecordedEvent, recipients: list[tuple[str, str]]) -> list[MailOrder]:
    d = event.data
    op = d.get("operation")
    if not isinstance(op, dict):
        return []
    title = "お振込受付のお知らせ" if op.get("type") == mo.TRANSFER else "お手続き受付のお知らせ"
    params = {"title": title, "accepted_at": jst(d["authorized_at"]),
              "reference": d["authorization_id"].split("-")[0].upper(),
              "operation_text": describe_operation(op), "method_text": METHOD_TEXT.get(d.get("method"), "")}
    return [MailOrder(template=TRANSACTION_ACCEPTED.name, to=(address,), params=params,
                      customer_number=d["customer_number"], slot=role) for role, address in recipients]


def orders_for_select_address_removed(event: RecordedEvent) -> list[MailOrder]:
    d = event.data
    to = _address(d.get("address"))
    if to is None:
        return []
    params = {"removed_at": jst(d["at"]), "slot_label": SLOT_LABELS.get(d.get("slot"), "セレクトメールアドレス"),
              "reason_text": "変更により登録解除" if d.get("reason") == "replaced" else "登録解除"}
    return [MailOrder(template=SELECT_ADDRESS_REMOVED.name, to=(to,), params=params,
                      customer_number=d.get("customer_number"))]
