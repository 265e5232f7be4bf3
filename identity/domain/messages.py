"""Every Japanese message identity shows a customer (or an operator), in one place.

Wording follows the bank's smartphone guide (手順2–4) where it has wording of its own.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

JST = timezone(timedelta(hours=9), "JST")
CONTACT = "ネットバンキング共同受付センター（0120-892-548、9:00～21:00）"

# -- login -----------------------------------------------------------------------------------
# One detail for "unknown number" and "wrong password": the answer must not tell them apart.
LEGACY_INVALID_CREDENTIALS = (
    "お客さま番号またはログインパスワードが正しくありません。『みちのくダイレクト』でご利用いただいていた"
    "「お客さま番号」（数字10桁）と「ログインパスワード」をご確認ください。"
    "所定の回数以上誤って入力されるとご利用いただけなくなります。")
INVALID_CREDENTIALS = (
    "ログインIDまたはログインパスワードが正しくありません。入力内容をご確認ください。"
    "所定の回数以上誤って入力されるとご利用いただけなくなります。"
    "初回操作がお済みでないお客さまは、初回操作のログインから「お客さま番号」でログインしてください。")
ALREADY_MIGRATED = (
    "初回操作は既に完了しています。『みちのくダイレクト』のパスワードはご利用いただけません。"
    "通常のログインから、ログインID（お客さま番号）と新しいログインパスワードでログインしてください。")

LOCKED = {
    "legacy_password": (
        "ログインパスワードを所定の回数以上誤って入力されたため、ご利用を停止しています。"
        f"お手数ですが、お取引店または{CONTACT}にご連絡ください。"),
    "login_password": (
        "ログインパスワードを所定の回数以上誤って入力されたため、ご利用を停止しています。"
        f"お手数ですが、お取引店または{CONTACT}にご連絡ください。"),
    "confirmation_password": (
        "確認用パスワード（確認暗証番号）を所定の回数以上誤って入力されたため、ご利用を停止しています。"
        f"お手数ですが、お取引店または{CONTACT}にご連絡ください。"),
}


def too_early(cutover_at: datetime) -> str:
    at = cutover_at.astimezone(JST)
    return (f"初回操作は{at.year}年{at.month}月{at.day}日{at.hour}:{at.minute:02d}以降に可能となります。"
            "開始日時以降にお手続きください。")


# -- steps -----------------------------------------------------------------------------------
STEP_NOT_AVAILABLE = "この手続きは現在行えません。画面の案内に従って、次の手続きにお進みください。"
CUSTOMER_NOT_FOUND = "お客さまの情報が見つかりません。もう一度ログインしてください。"
CHALLENGE_INVALID = "追加認証の有効期限が切れたか、操作が正しくありません。もう一度ログインしてください。"
WRONG_ANSWER = "秘密の質問の回答が正しくありません。初期設定で入力された回答と一字一句同じ文字でご入力ください。"
NOT_LOCKED = "この認証情報はロックされていません。"
CREDENTIAL_UNKNOWN = "認証情報の種類が正しくありません。"
OPERATOR_ONLY = "この操作はお取引店の担当者のみ行えます。"
OTP_REQUIRED = "ワンタイムパスワードを入力してください。"

# -- operator procedures (R-LEG-4) and the forced changes after them ---------------------------
NOT_MIGRATED = ("初回操作（パスワード変更）がお済みでないお客さまです。この手続きは初回操作の完了後に行えます。"
                "『みちのくダイレクト』のパスワードの再発行は、旧システムの手続きによります。")
LOGIN_PASSWORD_CHANGE_REQUIRED = (
    "仮ログインパスワードでログインしています。お取引の前に、新しいログインパスワードへの変更をお願いします。")
CONFIRMATION_PASSWORD_CHANGE_REQUIRED = (
    "確認用パスワードが仮パスワードのままです。お取引や各種設定の変更の前に、"
    "新しい確認用パスワードへの変更をお願いします。")
TEMPORARY_PASSWORD_EXPIRED = (
    "仮パスワードの有効期限が切れています。お手数ですが、お取引店で再発行の手続きをしてください。")
PHONES_REQUIRED = "変更後の電話番号を1件以上指定してください。"
PHONE_INVALID = "電話番号 {index} 件目は有効な日本国内の電話番号ではありません。"
PHONES_TOO_MANY = "電話番号が多すぎます（最大{max}件）。"
PHONES_UNCHANGED = "お届出の電話番号は既に指定の内容です。変更はありません。"
CURRENT_PASSWORD_WRONG = "{label}が正しくありません。"
NEW_LOGIN_EQUALS_CONFIRMATION = "新しいログインパスワードは確認用パスワードと異なるものを設定してください。"
NEW_CONFIRMATION_EQUALS_LOGIN = "新しい確認用パスワードはログインパスワードと異なるものを設定してください。"

# -- input shapes ----------------------------------------------------------------------------
REQUIRED = "{label}を入力してください。"
NOT_TEXT = "{label}は文字で入力してください。"
CUSTOMER_NUMBER_FORMAT = "お客さま番号は数字10桁で入力してください。"
LOGIN_ID_FORMAT = "ログインIDは半角英数字6～12桁で入力してください。"
PASSWORD_CHARSET = "{label}は半角英数字で入力してください。"
TOO_LONG = "{label}が長すぎます。"
CLIENT_INVALID = "ご利用環境の情報が正しくありません。"

# -- password change (R-INI-2) ----------------------------------------------------------------
LABELS = {
    "customer_number": "お客さま番号",
    "login_id": "ログインID",
    "password": "ログインパスワード",
    "current_login_password": "現在のログインパスワード",
    "new_login_password": "新しいログインパスワード",
    "new_login_password_confirmation": "新しいログインパスワード（再入力）",
    "current_confirmation_password": "現在の確認用パスワード",
    "new_confirmation_password": "新しい確認用パスワード",
    "new_confirmation_password_confirmation": "新しい確認用パスワード（再入力）",
    "otp": "ワンタイムパスワード",
    "answer": "回答",
    "challenge_id": "追加認証の番号",
    "body": "入力内容",
    "records": "取込データ",
    "credential": "認証情報の種類",
    "phone_id": "電話番号",
    "phones": "電話番号",
}
NEW_PASSWORD_FORMAT = "{label}は半角英数字6～12桁で入力してください。"
LOGIN_PASSWORD_MIXED_CASE = "新しいログインパスワードは英大文字と英小文字を混在させてください（半角英数字・大小文字混在の6～12桁）。"
CONFIRMATION_MISMATCH = "{label}が一致しません。確認のため同じものを再度入力してください。"
SAME_AS_CURRENT_LOGIN = "「現在のログインパスワード」と同一のものはご利用いただけません。"
SAME_AS_CURRENT_CONFIRMATION = "「現在の確認用パスワード」と同一のものはご利用いただけません。"
LOGIN_EQUALS_CONFIRMATION = "新しいログインパスワードと新しい確認用パスワードは異なるものを設定してください。"
CURRENT_LOGIN_WRONG = "現在のログインパスワードが正しくありません。『みちのくダイレクト』でご利用いただいていたログインパスワードを入力してください。"
CURRENT_CONFIRMATION_WRONG = "現在の確認用パスワードが正しくありません。『みちのくダイレクト』でご利用いただいていた確認暗証番号を入力してください。"
CONFIRMATION_PASSWORD_WRONG = "確認用パスワードが正しくありません。"

# -- legacy import (for the operator running ``tsunagi import-legacy``) ------------------------
IMPORT_REASONS = {
    "invalid_record": "行の形式が正しくありません。",
    "missing_field": "必須の項目（{field}）がありません。",
    "field_too_long": "項目（{field}）が長すぎます。",
    "invalid_customer_number": "お客さま番号は数字10桁で指定してください。",
    "unknown_verifier_scheme": "{field}の方式が不明です（平文または未対応の方式）。対応: pbkdf2_sha256, bcrypt($2a$/$2b$/$2y$)。",
    "invalid_verifier": "{field}の形式が正しくありません。",
    "verifier_cost_out_of_range": "{field}の計算回数（コスト）が許容範囲外です。",
    "no_valid_phone": "有効な電話番号が1件もありません。",
    "too_many_phones": "電話番号が多すぎます（最大{max}件）。",
    "invalid_email": "メールアドレスの形式が正しくありません。",
    "already_imported_with_different_data": "このお客さま番号は異なる内容で既に取り込まれています。",
    "invalid_encoding": "文字コードがUTF-8ではありません。",
    "wrong_column_count": "項目の数が正しくありません。",
}
INVALID_PHONE_WARNING = "電話番号 {index} 件目（{masked}）は無効なため取り込みませんでした。"
