"""After an operator's paper procedure (SPEC R-LEG-4), the customer finishes it in the web front
end, in Chromium driven by Playwright.

Run by ``tests/browser/test_operator_procedures_web.py`` in a process of its own (Playwright's
synchronous API does not survive the test process's eventlet patching). The operator's part is
``tsunagi operator …`` on the system's RabbitMQ vhost, run from here at the moment the journey
needs it; everything else is done as a customer would, with a screenshot of every step:

- re-issued login password (smartphone): log in with the temporary one → 「ログインパスワードの変更」
  (a browser rule and a server rule shown next to their fields) → the login screen again →
  the temporary password no longer works → the new one opens the menu;
- reset confirmation password (PC): a transfer confirmed with the mail notification password and
  the temporary confirmation password → 「確認用パスワードの変更」 (the server's refusal of the
  login password shown next to its field) → back on the same confirmation screen → the
  transfer is accepted with the new confirmation password.

    python -m tests.browser.operator_journey --base-url http://localhost:8000 --mail-dir DIR \
        --amqp-uri amqp://… --out DIR --result result.json --legacy-password P --pin P \
        --reissue N:PHONE:MAIL --reset N:PHONE:MAIL
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from playwright.sync_api import Page, expect

from tests.browser.journey import (IPHONE, MAIL_OTP_LINE, NEW_CONFIRMATION, NEW_LOGIN, PC, STEP_TIMEOUT_MS,
                                   Journey, run_in_chromium)

RENEWED_LOGIN = "Renewed2026A"
RENEWED_CONFIRMATION = "pinNew2026"
OPERATOR_ID, REASON = "op-77", "紙の申請書 2026-204"


class OperatorJourney(Journey):
    def __init__(self, args):
        super().__init__(args)
        self.amqp_uri = args.amqp_uri

    def operator(self, procedure: str, number: str) -> str:
        """The operator's side of the paper form; the temporary password it hands over."""
        proc = subprocess.run([sys.executable, "-m", "services.cli", "operator", procedure, number,
                               "--operator", OPERATOR_ID, "--reason", REASON, "--json"],
                              env={**os.environ, "AMQP_URI": self.amqp_uri}, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["ok"], out
        return out["result"]["temporary_password"]

    def submit_login(self, page: Page, number: str, password: str) -> None:
        page.locator("#login_id").fill(number)
        page.locator("#login_password").fill(password)
        page.locator('form[data-form="login"] button[type=submit]').click()

    def into_menu(self, page: Page, number: str, password: str) -> None:
        """Login; a secret question, if the environment is not known, is answered."""
        self.submit_login(page, number, password)
        page.wait_for_selector("#s-menu:not([hidden]), #s-challenge:not([hidden])", timeout=STEP_TIMEOUT_MS)
        if page.locator("#s-challenge").is_visible():
            question = page.locator("#challenge-question").inner_text()
            page.get_by_label(question).fill(self.answer_for(page, question))
            page.get_by_role("button", name="認証する").click()
        self.screen(page, "menu")

    def migrated(self, browser, number: str, device: dict) -> tuple:
        """A customer after steps 2–4 (no OTP), on the login screen of the same browser."""
        context = browser.new_context(base_url=self.base, locale="ja-JP", **device)
        page = context.new_page()
        self.migrate(page, number)
        page.get_by_role("button", name="ワンタイムパスワードを利用せずにログイン画面へ").click()
        self.screen(page, "login")
        return context, page

    # -- re-issued login password

    def reissue(self, browser, number: str, phone: str, email: str) -> None:
        context, page = self.migrated(browser, number, IPHONE)
        temporary = self.operator("reissue-login-password", number)
        self.step("login_password_reissued")

        with page.expect_response("**/api/v1/login") as answer:
            self.submit_login(page, number, temporary)
        assert answer.value.json().get("next_step") == "login_password_change", answer.value.json()
        self.screen(page, "loginpw")
        expect(page.locator("#logout")).to_be_visible()
        self.shot(page, "reissue-login-password-change")

        # R-INI-2 in the browser: mixed case (no request is sent)
        page.locator("#lp_current").fill(temporary)
        page.locator("#lp_new").fill("alllower12")
        page.locator("#lp_new_confirmation").fill("alllower12")
        page.get_by_role("button", name="変更を確定する").click()
        expect(page.locator("#e-lp_new")).to_contain_text("英大文字と英小文字を混在")
        # … and the server's rule: not the confirmation password, shown next to the field
        page.locator("#lp_new").fill(NEW_CONFIRMATION)
        page.locator("#lp_new_confirmation").fill(NEW_CONFIRMATION)
        page.get_by_role("button", name="変更を確定する").click()
        expect(page.locator("#e-lp_new")).to_contain_text("確認用パスワードと異なるもの", timeout=STEP_TIMEOUT_MS)
        self.shot(page, "reissue-login-password-server-rule")
        self.step("login_password_change_rules")

        page.locator("#lp_new").fill(RENEWED_LOGIN)
        page.locator("#lp_new_confirmation").fill(RENEWED_LOGIN)
        page.get_by_role("button", name="変更を確定する").click()
        self.screen(page, "login")
        expect(page.locator("#alert")).to_contain_text("ログインパスワードを変更しました")
        expect(page.locator("#logout")).to_be_hidden()
        self.shot(page, "reissue-login-password-changed")
        self.step("login_password_changed")

        # the temporary password is spent; the new one logs in
        self.submit_login(page, number, temporary)
        expect(page.locator("#alert")).to_contain_text("ログインパスワードが正しくありません", timeout=STEP_TIMEOUT_MS)
        self.screen(page, "login")
        self.shot(page, "reissue-temporary-password-spent")
        self.into_menu(page, number, RENEWED_LOGIN)
        self.shot(page, "reissue-menu-with-new-password")
        self.step("login_with_new_password")
        context.close()

    # -- reset confirmation password

    def reset(self, browser, number: str, phone: str, email: str) -> None:
        context, page = self.migrated(browser, number, PC)
        self.into_menu(page, number, NEW_LOGIN)
        temporary = self.operator("reset-confirmation-password", number)
        self.step("confirmation_password_reset")

        page.get_by_role("button", name="振込").click()
        self.screen(page, "transfer")
        page.get_by_label("金融機関コード").fill("0117")
        page.get_by_label("支店番号").fill("456")
        page.get_by_label("口座番号").fill("7654321")
        page.get_by_label("受取人名").fill("ｽｽﾞｷ ﾊﾅｺ")
        page.get_by_label("振込金額（円）").fill("12000")
        page.get_by_role("button", name="確認画面へ").click()
        self.screen(page, "confirm")
        expect(page.locator("#mail-otp-block")).to_be_visible(timeout=STEP_TIMEOUT_MS)
        before = len(self.mails())
        page.get_by_role("button", name="メール通知パスワードを送信").click()
        expect(page.locator("#mail-otp-sent")).to_contain_text("送信しました", timeout=STEP_TIMEOUT_MS)
        mail = self.wait_mail(lambda m: m["To"] == email and MAIL_OTP_LINE.search(m.get_body(("plain",)).get_content()),
                              after=before)
        code = MAIL_OTP_LINE.search(mail.get_body(("plain",)).get_content()).group(1)
        page.locator("#mail_otp").fill(code)
        page.locator("#auth_confirmation_password").fill(temporary)
        page.get_by_role("button", name="確定する", exact=True).click()

        # refused with password_change_required: the change screen, with the server's words
        self.screen(page, "confirmpw")
        expect(page.locator("#alert")).to_contain_text("仮パスワードのまま")
        self.shot(page, "reset-confirmation-password-change")
        page.locator("#cp_current").fill(temporary)
        page.locator("#cp_new").fill(NEW_LOGIN)                     # the login password: refused
        page.locator("#cp_new_confirmation").fill(NEW_LOGIN)
        page.get_by_role("button", name="変更を確定する").click()
        expect(page.locator("#e-cp_new")).to_contain_text("ログインパスワードと異なるもの", timeout=STEP_TIMEOUT_MS)
        self.shot(page, "reset-confirmation-password-server-rule")
        page.locator("#cp_new").fill(RENEWED_CONFIRMATION)
        page.locator("#cp_new_confirmation").fill(RENEWED_CONFIRMATION)
        page.get_by_role("button", name="変更を確定する").click()
        self.step("confirmation_password_changed")

        # back on the same transfer: the code is kept, the temporary password is not
        self.screen(page, "confirm")
        expect(page.locator("#alert")).to_contain_text("確認用パスワードを変更しました")
        expect(page.locator("#confirm-summary")).to_contain_text("12,000円")
        expect(page.locator("#mail_otp")).to_have_value(code)
        expect(page.locator("#auth_confirmation_password")).to_have_value("")
        self.shot(page, "reset-back-to-transfer")
        page.locator("#auth_confirmation_password").fill(RENEWED_CONFIRMATION)
        page.get_by_role("button", name="確定する", exact=True).click()
        self.screen(page, "accepted")
        authorization_id = page.locator("#accepted-id").inner_text()
        assert authorization_id
        self.shot(page, "reset-transfer-accepted")
        self.result["authorization_id"] = authorization_id
        self.step("transfer_after_reset", authorization_id=authorization_id)
        context.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--mail-dir", required=True)
    p.add_argument("--amqp-uri", required=True, help="the system's broker, for `tsunagi operator`")
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--auth-token", default=None)
    p.add_argument("--legacy-password", required=True)
    p.add_argument("--pin", required=True)
    p.add_argument("--reissue", help="NUMBER:PHONE:EMAIL")
    p.add_argument("--reset", help="NUMBER:PHONE:EMAIL")
    args = p.parse_args(argv)
    journey = OperatorJourney(args)

    def steps(browser):
        if args.reissue:
            journey.reissue(browser, *args.reissue.split(":"))
        if args.reset:
            journey.reset(browser, *args.reset.split(":"))

    return run_in_chromium(steps, journey.result, args.result)

if __name__ == "__main__":
    sys.exit(main())
