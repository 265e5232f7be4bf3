"""The customer's journey through the web front end in Chromium, driven by Playwright.

Run by ``tests/browser/test_web_journey.py`` in a process of its own: the test process is
patched by eventlet (for Nameko), and Playwright's synchronous API does not survive that (it
hangs on exit). Everything here is the test: it fills the screens as a customer would, places
the phone call through the signed telephony webhook while the phone screen waits, reads the
token mail and the mail notification password from the test SMTP server's mailbox, computes
the OTP with pyotp from the activation result, registers and uses a passkey with Chromium's
virtual authenticator, and saves a screenshot of every step. It exits non-zero at the first
step that does not look as the guides say, and writes what it saw as JSON for the test.

    python -m tests.browser.journey --base-url http://localhost:8000 --mail-dir DIR \
        --out test-artifacts/screenshots --result result.json --smartphone N:PHONE:MAIL --pc N:PHONE:MAIL
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from pathlib import Path

import pyotp
from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NEW_LOGIN = "Tsunagi2025X"
NEW_CONFIRMATION = "kakunin99Z"
ACTIVATION_PASSWORD = "482913"
ANSWERS = ["やまだ", "東小学校", "青森　りんご"]
TOKEN_SUBJECT = "トークン発行のご案内"
MAIL_OTP_LINE = re.compile(r"■メール通知パスワード\s*\n\s*(\d{6})\s*\n")
IPHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 1, "is_mobile": True, "has_touch": True,
          "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
                        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"}
PC = {"viewport": {"width": 1280, "height": 900}}
STEP_TIMEOUT_MS = 30_000


class Journey:
    def __init__(self, args):
        self.base = args.base_url.rstrip("/")
        self.mail_dir = Path(args.mail_dir)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.auth_token = args.auth_token
        self.legacy_password = args.legacy_password
        self.pin = args.pin
        self.result: dict = {"steps": [], "screenshots": []}
        self.shot_no = 0

    # -- plumbing

    def shot(self, page: Page, name: str) -> None:
        self.shot_no += 1
        path = self.out / f"{self.shot_no:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.result["screenshots"].append(str(path))

    def step(self, name: str, **seen) -> None:
        self.result["steps"].append({"step": name, **seen})
        print(f"journey: {name} {json.dumps(seen, ensure_ascii=False) if seen else ''}", flush=True)

    def screen(self, page: Page, name: str) -> None:
        expect(page.locator(f"#s-{name}")).to_be_visible(timeout=STEP_TIMEOUT_MS)

    def mails(self):
        from services.smtp_sink import read_mail_dir
        return read_mail_dir(self.mail_dir)

    def wait_mail(self, predicate, timeout: float = 30.0, after: int = 0):
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.mails()[after:]:
                if predicate(msg):
                    return msg
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching mail within {timeout}s")
            time.sleep(0.1)

    # -- the first screen: page weight and time to interactive

    def first_screen(self, context) -> Page:
        page = context.new_page()
        sizes: dict[str, int] = {}
        page.on("response", lambda r: sizes.__setitem__(r.url, len(r.body()) if r.ok else 0))
        page.goto(self.base + "/", wait_until="load")
        page.wait_for_function("document.documentElement.dataset.readyAt !== undefined")
        timing = page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            return {ready_ms: Number(document.documentElement.dataset.readyAt),
                    dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd),
                    load_ms: Math.round(nav.loadEventEnd),
                    transfer_bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0)};
        }""")
        self.screen(page, "login")
        weight = sum(sizes.values())
        self.result["first_screen"] = {"bytes": weight, "requests": len(sizes), "urls": sorted(sizes), **timing}
        self.step("first_screen", bytes=weight, requests=len(sizes), **timing)
        # Japanese text is laid out (not tofu): the heading is as wide as real glyphs make it.
        width = page.evaluate("document.querySelector('#s-login h1').getBoundingClientRect().width")
        if not self.result.get("first_screen_shot"):
            self.shot(page, "login-first-screen")
            self.result["first_screen_shot"] = True
        self.result["heading_width"] = width
        return page

    def warm_load(self, context) -> dict:
        """The first screen again in the same browser profile: the assets come from the cache."""
        page = context.new_page()
        page.goto(self.base + "/", wait_until="load")
        page.wait_for_function("document.documentElement.dataset.readyAt !== undefined")
        warm = page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            return {ready_ms: Number(document.documentElement.dataset.readyAt),
                    transfer_bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
                    from_cache: res.filter(r => r.transferSize === 0).length, requests: 1 + res.length};
        }""")
        page.close()
        return warm

    # -- smartphone customer: the whole initial operation, OTP login, biometric login

    def smartphone(self, browser, number: str, phone: str, email: str) -> None:
        context = browser.new_context(base_url=self.base, locale="ja-JP", **IPHONE)
        page = self.first_screen(context)

        page.get_by_role("button", name="初期操作を始める").click()
        self.screen(page, "legacy")
        page.get_by_label("お客さま番号").fill("12345")
        page.locator("#legacy_password").fill("x")
        page.locator('form[data-form="legacy"] button[type=submit]').click()
        expect(page.locator("#e-customer_number")).to_have_text("お客さま番号は数字10桁で入力してください。")
        self.shot(page, "legacy-login-field-rule")
        self.step("legacy_login_browser_rule")

        page.get_by_label("お客さま番号").fill(number)
        page.locator("#legacy_password").fill(self.legacy_password)
        with page.expect_response("**/api/v1/migration/login") as answer:
            page.locator('form[data-form="legacy"] button[type=submit]').click()
        body = answer.value.json()
        assert "session_token" not in body and body["session_transport"] == "cookie", body
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["tsunagi_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict", session
        assert "tsunagi_session" not in page.evaluate("document.cookie")
        self.result["session_cookie"] = {k: session[k] for k in ("httpOnly", "sameSite", "secure", "path")}
        self.step("legacy_login", next_step=body["next_step"], cookie=self.result["session_cookie"])

        # step 3: the button waits for 「確認しました。」
        self.screen(page, "questions")
        submit = page.get_by_role("button", name="登録を確定する")
        expect(submit).to_be_disabled()
        for n, answer_text in enumerate(ANSWERS, start=1):
            page.locator(f"#q{n}").select_option(index=n)
            page.locator(f"#a{n}").fill(answer_text)
        page.locator("#a1").fill("yamada")                      # half-width: refused in the browser
        page.get_by_label("確認しました。").check()
        expect(submit).to_be_enabled()
        submit.click()
        expect(page.locator("#e-a1")).to_contain_text("全角文字で入力してください")
        self.shot(page, "secret-questions-field-rule")
        page.locator("#a1").fill(ANSWERS[0])
        self.shot(page, "secret-questions")
        submit.click()
        self.step("secret_questions")

        # step 4: a wrong current password is the server's call — its Japanese words are shown
        self.screen(page, "password")
        fields = {"current_login_password": self.legacy_password, "new_login_password": NEW_LOGIN,
                  "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": "Wrong123x",
                  "new_confirmation_password": NEW_CONFIRMATION,
                  "new_confirmation_password_confirmation": NEW_CONFIRMATION}
        for name, value in fields.items():
            page.locator(f"#{name}").fill(value)
        page.get_by_role("button", name="変更を確定する").click()
        expect(page.locator("#e-current_confirmation_password")).to_contain_text("正しくありません", timeout=STEP_TIMEOUT_MS)
        expect(page.locator("#alert")).to_be_visible()
        self.shot(page, "password-change-server-error")
        page.locator("#current_confirmation_password").fill(self.pin)
        self.shot(page, "password-change")
        page.get_by_role("button", name="変更を確定する").click()
        self.step("password_change")

        # step 5: OTP application
        self.screen(page, "apply")
        masked = page.locator("#phone-options label").first.inner_text()
        assert masked.endswith(phone[-4:]) and phone[-9:-5] not in masked, masked
        page.locator("#email").fill(email)
        page.locator("#email_confirmation").fill(email)
        page.locator("#activation_password").fill(ACTIVATION_PASSWORD)
        page.locator("#activation_password_confirmation").fill(ACTIVATION_PASSWORD)
        page.locator("#phone-options input").first.check()
        page.locator("#apply_confirmation_password").fill(NEW_CONFIRMATION)
        self.shot(page, "otp-application")
        page.get_by_role("button", name="電話番号認証を行う").click()

        # step 6: the phone screen waits; the call comes in through the signed webhook
        self.screen(page, "phone")
        expect(page.locator("#call-from")).to_have_text(masked)
        tel = page.locator("#call-to")
        call_to = tel.inner_text()
        href = tel.get_attribute("href")
        assert href == "tel:" + re.sub(r"[^0-9+]", "", call_to), (href, call_to)
        countdown = int(page.locator("#countdown").inner_text())
        assert 0 < countdown <= 120, countdown
        demo_visible = page.locator("#demo-call").is_visible()
        page.wait_for_timeout(1200)                              # the countdown runs
        later = int(page.locator("#countdown").inner_text())
        assert later < countdown, (countdown, later)
        self.shot(page, "phone-verification-waiting")
        page.get_by_role("button", name="確定する", exact=True).click()      # not yet: it says so and stays
        expect(page.locator("#alert")).to_contain_text("まだ電話番号認証が完了していません")
        self.screen(page, "phone")
        status, reply = self.call(phone, call_to)
        assert status == 200 and "<Reject" in reply, (status, reply)
        self.screen(page, "token")                               # moved on by itself (long poll)
        service_id = page.locator("#token-service-id").inner_text()
        user_id = page.locator("#token-user-id").inner_text()
        assert service_id and len(user_id) == 16, (service_id, user_id)
        self.shot(page, "token-information")
        self.step("phone_verified", call_to=call_to, countdown=countdown, demo_button=demo_visible,
                  service_id=service_id)
        self.result["demo_button_visible"] = demo_visible

        mail = self.wait_mail(lambda m: m["To"] == email and TOKEN_SUBJECT in str(m["Subject"]))
        text = mail.get_body(("plain",)).get_content()
        assert service_id in text and user_id in text
        self.step("token_mail", sender=str(mail["From"]))

        # steps 8, 9 (this page plays the OTP app)
        page.get_by_role("button", name="ワンタイムパスワードの初期設定へ").click()
        self.screen(page, "activate")
        expect(page.locator("#service_id")).to_have_value(service_id)
        page.locator("#act_password").fill(ACTIVATION_PASSWORD)
        page.get_by_label("アプリ利用上の注意を確認し、上記の内容に同意する。").check()
        page.get_by_role("button", name="送信").click()
        expect(page.locator("#activation-result")).to_be_visible(timeout=STEP_TIMEOUT_MS)
        uri = page.locator("#otpauth-uri").inner_text()
        totp = pyotp.parse_uri(uri)
        expect(page.locator("#current-otp")).to_have_text(re.compile(r"^\d{6}$"))
        shown = page.locator("#current-otp").inner_text()
        assert shown in {totp.at(time.time() + d) for d in (-30, 0, 30)}, "the page's OTP is not the token's"
        self.shot(page, "activation-otpauth-uri")
        self.step("activated", issuer=totp.issuer)
        page.get_by_role("button", name="次へ").click()
        self.screen(page, "displayname")
        page.get_by_label("［任意］変更後の追加文言").fill("本店用")
        self.shot(page, "display-name")
        page.get_by_role("button", name="登録", exact=True).click()
        self.screen(page, "done")
        expect(page.locator("#done-text")).to_contain_text("青森みちのく銀行 本店用")
        self.shot(page, "initial-operation-done")
        self.step("display_name")

        # login with the OTP (the device of the initial operation is known: no step-up)
        page.get_by_role("button", name="ログイン画面へ").click()
        self.screen(page, "login")
        self.login(page, number, otp=self.fresh_otp(totp))
        self.screen(page, "menu")
        self.shot(page, "menu-after-otp-login")
        self.step("otp_login")

        # biometric registration and login (Chromium's virtual authenticator)
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True}})
        page.get_by_role("button", name="生体認証利用設定").click()
        self.screen(page, "biometric")
        page.get_by_role("button", name="この端末を生体認証に登録する").click()
        expect(page.locator("#passkey-status")).to_contain_text("登録しました", timeout=STEP_TIMEOUT_MS)
        expect(page.locator("#passkey-list li")).to_have_count(1)
        self.shot(page, "biometric-registered")
        self.step("passkey_registered")
        page.get_by_role("button", name="ログアウト").click()
        self.screen(page, "login")
        assert "tsunagi_session" not in {c["name"] for c in context.cookies()}
        page.get_by_role("button", name="生体認証でログイン").click()
        self.screen(page, "menu")
        self.shot(page, "menu-after-biometric-login")
        self.step("passkey_login")
        # listed and removable
        page.get_by_role("button", name="生体認証利用設定").click()
        self.screen(page, "biometric")
        expect(page.locator("#passkey-list li")).to_have_count(1)
        page.locator("#passkey-list").get_by_role("button", name="削除").click()
        expect(page.locator("#passkey-list")).to_have_text("登録済みの端末はありません。", timeout=STEP_TIMEOUT_MS)
        self.shot(page, "biometric-removed")
        self.step("passkey_removed")
        context.close()

    def fresh_otp(self, totp) -> str:
        # A code about to expire could reach the server in the next window: wait for a new one.
        remaining = 30 - (time.time() % 30)
        if remaining < 3:
            time.sleep(remaining + 0.2)
        return totp.now()

    def login(self, page: Page, login_id: str, *, otp: str | None = None) -> None:
        page.get_by_label("ログインID").fill(login_id)
        page.locator("#login_password").fill(NEW_LOGIN)
        if otp:
            page.locator("#login_otp").fill(otp)
        page.locator('form[data-form="login"] button[type=submit]').click()

    def call(self, phone: str, call_to: str) -> tuple[int, str]:
        from services.cli.demo import place_call
        return place_call(self.base, phone, call_to, auth_token=self.auth_token)

    # -- PC customer: no OTP, step-up login, transfer with the mail notification password

    def migrate(self, page: Page, number: str) -> None:
        """Steps 2–4 without detours, ending on the OTP application screen."""
        page.goto("/")
        page.get_by_role("button", name="初期操作を始める").click()
        page.get_by_label("お客さま番号").fill(number)
        page.locator("#legacy_password").fill(self.legacy_password)
        page.locator('form[data-form="legacy"] button[type=submit]').click()
        self.screen(page, "questions")
        for n, answer_text in enumerate(ANSWERS, start=1):
            page.locator(f"#q{n}").select_option(index=n)
            page.locator(f"#a{n}").fill(answer_text)
        page.get_by_label("確認しました。").check()
        page.get_by_role("button", name="登録を確定する").click()
        self.screen(page, "password")
        for name, value in {"current_login_password": self.legacy_password, "new_login_password": NEW_LOGIN,
                            "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": self.pin,
                            "new_confirmation_password": NEW_CONFIRMATION,
                            "new_confirmation_password_confirmation": NEW_CONFIRMATION}.items():
            page.locator(f"#{name}").fill(value)
        page.get_by_role("button", name="変更を確定する").click()
        self.screen(page, "apply")

    def demo_button(self, browser, number: str, phone: str, email: str) -> None:
        """DEMO_MODE=1: the phone screen's demo button places the call; the page moves on."""
        context = browser.new_context(base_url=self.base, locale="ja-JP", **IPHONE)
        page = context.new_page()
        self.migrate(page, number)
        page.locator("#email").fill(email)
        page.locator("#email_confirmation").fill(email)
        page.locator("#activation_password").fill(ACTIVATION_PASSWORD)
        page.locator("#activation_password_confirmation").fill(ACTIVATION_PASSWORD)
        page.locator("#phone-options input").first.check()
        page.locator("#apply_confirmation_password").fill(NEW_CONFIRMATION)
        page.get_by_role("button", name="電話番号認証を行う").click()
        self.screen(page, "phone")
        page.get_by_role("button", name="デモ: 登録電話番号から発信する").click()
        self.screen(page, "token")
        service_id = page.locator("#token-service-id").inner_text()
        self.shot(page, "demo-button-token-information")
        self.step("demo_button_verified", service_id=service_id)
        context.close()

    def pc(self, browser, number: str, phone: str, email: str) -> None:
        # The PC customer opens the page on 127.0.0.1 (no WebAuthn needed): the Secure session
        # cookie must work there too.
        base = self.base.replace("//localhost:", "//127.0.0.1:")
        context = browser.new_context(base_url=base, locale="ja-JP", **PC)
        page = context.new_page()
        self.migrate(page, number)
        self.shot(page, "pc-otp-application-skip")
        page.get_by_role("button", name="ワンタイムパスワードを利用せずにログイン画面へ").click()
        self.screen(page, "login")
        context.close()
        self.step("pc_initial_operation")

        # another PC: an unusual environment → the secret question
        context = browser.new_context(base_url=base, locale="ja-JP", **PC)
        page = context.new_page()
        page.goto("/")
        self.login(page, number)
        self.screen(page, "challenge")
        question = page.locator("#challenge-question").inner_text()
        self.shot(page, "pc-login-secret-question")
        page.get_by_label(question).fill("abc")                 # half-width: the browser refuses it
        page.get_by_role("button", name="認証する").click()
        expect(page.locator("#e-answer")).to_contain_text("全角文字で入力してください")
        answer_text = self.answer_for(page, question)
        page.get_by_label(question).fill(answer_text)
        page.get_by_role("button", name="認証する").click()
        self.screen(page, "menu")
        session = {c["name"]: c for c in context.cookies()}["tsunagi_session"]
        self.result["session_cookie_127"] = {k: session[k] for k in ("httpOnly", "sameSite", "secure", "path")}
        self.shot(page, "pc-menu")
        self.step("pc_step_up_login", question=question)

        # transfer, confirmed with the mail notification password
        page.get_by_role("button", name="振込").click()
        self.screen(page, "transfer")
        page.get_by_label("金融機関コード").fill("0117")
        page.get_by_label("支店番号").fill("123")
        page.get_by_label("口座番号").fill("1234567")
        page.get_by_label("受取人名").fill("ﾔﾏﾀﾞ ﾀﾛｳ")
        page.get_by_label("振込金額（円）").fill("50000")
        self.shot(page, "pc-transfer")
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
        page.locator("#auth_confirmation_password").fill(NEW_CONFIRMATION)
        self.shot(page, "pc-transfer-confirm-mail-otp")
        page.get_by_role("button", name="確定する", exact=True).click()
        self.screen(page, "accepted")
        authorization_id = page.locator("#accepted-id").inner_text()
        assert authorization_id
        self.shot(page, "pc-transfer-accepted")
        self.result["authorization_id"] = authorization_id
        self.step("pc_transfer_authorized", authorization_id=authorization_id, mail_from=str(mail["From"]))

        page.get_by_role("button", name="メニューへ").click()
        page.get_by_role("button", name="セレクトＥメールサービス").click()
        self.screen(page, "selectmail")
        expect(page.locator("#registered-address")).to_have_text(re.compile(r".+@"))
        select1 = f"select1-{number}@example.jp"
        page.locator("#select1_enabled").check()
        page.locator("#select1_address").fill(select1)
        self.shot(page, "pc-select-email")
        page.get_by_role("button", name="セレクトＥメールサービス利用の変更確認画面へ").click()
        self.screen(page, "confirm")
        expect(page.locator("#confirm-summary")).to_contain_text(select1)
        before = len(self.mails())
        page.get_by_role("button", name="メール通知パスワードを送信").click()
        expect(page.locator("#mail-otp-sent")).to_contain_text("送信しました", timeout=STEP_TIMEOUT_MS)
        mail = self.wait_mail(lambda m: m["To"] == email and MAIL_OTP_LINE.search(m.get_body(("plain",)).get_content()),
                              after=before)
        page.locator("#mail_otp").fill(MAIL_OTP_LINE.search(mail.get_body(("plain",)).get_content()).group(1))
        page.locator("#auth_confirmation_password").fill(NEW_CONFIRMATION)
        page.get_by_role("button", name="確定する", exact=True).click()
        self.screen(page, "selectmail")
        expect(page.locator("#alert")).to_contain_text("変更しました", timeout=STEP_TIMEOUT_MS)
        expect(page.locator("#select1-state")).to_contain_text("利用する")
        expect(page.locator("#select1_address")).to_have_value(select1)
        self.shot(page, "pc-select-email-changed")
        self.step("pc_select_email", select1=select1)
        context.close()

    @staticmethod
    def answer_for(page: Page, question: str) -> str:
        # Questions 1..3 were the catalogue's first three (options 1..3 after the placeholder).
        texts = [o["text"] for o in page.evaluate("fetch('/api/v1/secret-questions/catalogue').then(r => r.json())")]
        return ANSWERS[texts.index(question)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--mail-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--auth-token", default=None)
    p.add_argument("--legacy-password", required=True)
    p.add_argument("--pin", required=True)
    p.add_argument("--smartphone", help="NUMBER:PHONE:EMAIL")
    p.add_argument("--pc", help="NUMBER:PHONE:EMAIL")
    p.add_argument("--demo-button", help="NUMBER:PHONE:EMAIL (the system runs with DEMO_MODE=1)")
    p.add_argument("--first-screen-only", action="store_true", help="only load the first screen (bench)")
    p.add_argument("--rounds", type=int, default=1)
    args = p.parse_args(argv)
    journey = Journey(args)

    def steps(browser):
        if args.first_screen_only:
            rounds = []
            for _ in range(args.rounds):
                context = browser.new_context(base_url=journey.base, locale="ja-JP", **IPHONE)
                page = journey.first_screen(context)
                page.close()
                rounds.append({**journey.result["first_screen"], "warm": journey.warm_load(context)})
                context.close()
            journey.result["rounds"] = rounds
        if args.smartphone:
            journey.smartphone(browser, *args.smartphone.split(":"))
        if args.pc:
            journey.pc(browser, *args.pc.split(":"))
        if args.demo_button:
            journey.demo_button(browser, *args.demo_button.split(":"))

    return run_in_chromium(steps, journey.result, args.result)


def run_in_chromium(steps, result: dict, result_path: str) -> int:
    """Run ``steps(browser)`` in Debian's Chromium and write ``result`` (with ``ok``, and the
    error with the page's state when a step failed) to ``result_path`` for the test to read.
    Returns the process's exit code."""
    code = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            steps(browser)
            result["ok"] = True
        except Exception as exc:   # noqa: BLE001 - reported to the test with the page's state
            code = 1
            result["ok"] = False
            result["error"] = "".join(traceback.format_exception(exc))
            print(result["error"], file=sys.stderr, flush=True)
        finally:
            browser.close()
    Path(result_path).write_text(json.dumps(result, ensure_ascii=False, indent=2))
    return code

if __name__ == "__main__":
    sys.exit(main())
