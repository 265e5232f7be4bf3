"""The mail catalogue and the recipes that turn an event into mails.

Adding a kind of mail (next issue: the mail notification password, the transaction-acceptance
mail from am-bk.co.jp to the registered and select addresses) means: a ``Template`` here, a
recipe ``orders_for_<event>(event) -> [MailOrder]`` choosing recipients (one order per
address, each with its own ``slot`` so each gets its own mail id and Message-ID), a
subscription in ``contracts.notifier`` and a three-line handler in ``notifier.service``.
Queuing, rendering, SMTP, retries and exactly-once delivery are shared.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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

TEMPLATES: dict[str, Template] = {t.name: t for t in (TOKEN_ISSUED,)}


@dataclass(frozen=True)
class MailOrder:
    """One mail to queue for an event."""
    template: str
    to: tuple[str, ...]
    params: dict
    customer_number: str | None
    slot: str = ""                       # "" = the event's one mail
    extra: dict = field(default_factory=dict)


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
