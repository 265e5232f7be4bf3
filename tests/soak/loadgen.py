"""Load generator: complete initial operations over HTTP, as many customers' phones would.

One ``Flow`` is one customer of the old 『みちのくダイレクト』 going through the smartphone guide
against a running system: legacy login (R-LEG-3) → secret questions (R-INI-1) → password
change (R-INI-2) → OTP application (R-INI-3) → the call through the signed Twilio-style
webhook (R-INI-4) → the token mail 「トークン発行のご案内」 read from the test SMTP mailbox
(R-INI-5) → activation (R-INI-6) → display name (R-INI-7) → a login with a pyotp code (R-INI-9).

The client behaves as a well-made front end does under faults: it retries a request that
failed with a clear transient error (5xx answered as problem+json, a refused or dropped
connection) with exponential backoff, and when a step's answer was lost after the system had
already done it (the next attempt is refused as out of order) it does not give up but asks
where it stands — logs in again and follows ``next_step`` / the step's conflict code. A 5xx
that is not problem+json is an *unclear* error and is counted as such (it must stay 0).

Everything a flow typed or received that must never be logged (passwords, secret answers,
OTP codes, TOTP secrets, the e-mail address, the phone number) is kept in ``Secrets`` so the
log scanner (tests/soak/secrets_scan.py) can look for it afterwards.

Reusable: ``LoadGenerator(base_url, mailbox, ...)``, ``run(customers)``; ``seed_customers``
imports them through `tsunagi import-legacy` (the operator's own path).
"""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import requests

from gateway.routes_telephony import DEV_AUTH_TOKEN, PATH as WEBHOOK_PATH, twilio_signature

LEGACY_PASSWORD = "Michi2024Soak"
LEGACY_PIN = "Pin4821soak"
NEW_LOGIN = "Tsunagi25Sk"
NEW_CONFIRMATION = "kakunin7Sk"
ACTIVATION_PASSWORD = "739164"
ANSWERS = [{"question_id": "q02", "answer": "さくらんぼ"},
           {"question_id": "q04", "answer": "弘前城"},
           {"question_id": "q06", "answer": "ねぶた祭"}]
RIGHT = {a["question_id"]: a["answer"] for a in ANSWERS}
TOKEN_SUBJECT = "トークン発行のご案内"
USER_AGENT = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Safari/604.1"
SERVICE_ID_RE = re.compile(r"サービスID：\s*(\S+)")
USER_ID_RE = re.compile(r"ユーザID\s*：\s*(\S+)")


class Unclear(Exception):
    """The system answered in a way a client cannot act on (5xx without problem+json, or an
    unexpected status for a step): a defect, never retried silently."""


class Stranded(Exception):
    """The flow cannot go on by retrying (must never happen)."""


@dataclass
class Customer:
    number: str
    phone: str           # as the bank's records hold it (090-xxxx-xxxx)
    e164: str            # as the provider reports the caller
    email: str

    @classmethod
    def new(cls) -> "Customer":
        digits = f"{random.randrange(10**7, 10**8)}"
        return cls(number=f"{random.randrange(10**9, 10**10):010d}",
                   phone=f"090-{digits[:4]}-{digits[4:]}", e164=f"+8190{digits}",
                   email=f"soak-{uuid.uuid4().hex[:12]}@example.jp")


@dataclass
class Secrets:
    """Values the flows used that no log line may contain."""
    passwords: set = field(default_factory=lambda: {LEGACY_PASSWORD, LEGACY_PIN, NEW_LOGIN, NEW_CONFIRMATION})
    answers: set = field(default_factory=lambda: {a["answer"] for a in ANSWERS})
    activation_passwords: set = field(default_factory=lambda: {ACTIVATION_PASSWORD})
    otp_codes: set = field(default_factory=set)
    totp_secrets: set = field(default_factory=set)
    emails: set = field(default_factory=set)
    phones: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, value: str) -> None:
        with self.lock:
            getattr(self, kind).add(value)

    def add_customer(self, c: Customer) -> None:
        with self.lock:
            self.emails.add(c.email)
            self.phones.update({c.phone, c.e164, c.phone.replace("-", "")})


@dataclass
class Stats:
    completed: int = 0
    requests: int = 0
    failed: list = field(default_factory=list)          # (customer number, reason)
    retries: Counter = field(default_factory=Counter)   # by reason (status / connection)
    resumes: Counter = field(default_factory=Counter)   # lost answers recovered, by step
    unclear: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def retry(self, why: str) -> None:
        with self.lock:
            self.retries[why] += 1

    def resume(self, why: str) -> None:
        with self.lock:
            self.resumes[why] += 1


# -- seeding -------------------------------------------------------------------------------------

def pbkdf2(password: str, iterations: int = 1000) -> str:
    salt = base64.b64encode(os.urandom(9)).decode()
    key = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(key).decode()}"


def seed_customers(n: int, workdir: Path, env: dict, cwd: Path, attempts: int = 5) -> list[Customer]:
    """Import ``n`` new legacy customers with `tsunagi import-legacy` (idempotent, so a run
    that could not finish is simply run again)."""
    customers = [Customer.new() for _ in range(n)]
    path = workdir / f"legacy-{uuid.uuid4().hex[:8]}.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_number", "login_password_verifier", "confirmation_pin_verifier", "phones", "email"])
        for c in customers:
            w.writerow([c.number, pbkdf2(LEGACY_PASSWORD), pbkdf2(LEGACY_PIN), c.phone, ""])
    os.chmod(path, 0o600)
    for _ in range(attempts):
        r = subprocess.run([sys.executable, "-m", "services.cli", "import-legacy", str(path),
                            "--operator", "soak", "--json"], env=env, cwd=cwd, capture_output=True, timeout=600)
        if r.returncode == 0:
            return customers
        time.sleep(2)
    raise RuntimeError(f"import-legacy failed ({r.returncode}): {r.stderr.decode()[-2000:]}")


# -- HTTP with retries -----------------------------------------------------------------------------

class Client:
    """One front end: requests with backoff on clear transient errors."""

    def __init__(self, base_url: str, stats: Stats, *, max_tries: int = 40, max_backoff: float = 4.0):
        self.base = base_url
        self.http = requests.Session()
        self.stats = stats
        self.max_tries = max_tries
        self.max_backoff = max_backoff

    def request(self, method: str, path: str, body=None, *, token: str | None = None,
                headers: dict | None = None, data: bytes | None = None, timeout: float = 30.0):
        hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            data = json.dumps(body, ensure_ascii=False).encode()
        delay = 0.2
        for attempt in range(self.max_tries):
            with self.stats.lock:
                self.stats.requests += 1
            try:
                r = self.http.request(method, self.base + path, data=data, headers=hdrs, timeout=timeout)
            except requests.RequestException as exc:
                self.stats.retry(f"connection:{type(exc).__name__}")
            else:
                if r.status_code < 500:
                    return r
                if not r.headers.get("Content-Type", "").startswith("application/problem+json"):
                    with self.stats.lock:
                        self.stats.unclear.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
                    self.stats.retry(f"{r.status_code}:unclear")
                else:
                    self.stats.retry(f"{r.status_code}:{r.json().get('code')}")
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)
        raise Stranded(f"{method} {path}: still failing after {self.max_tries} tries")


def code_of(r) -> str | None:
    try:
        return r.json().get("code")
    except ValueError:
        return None


# -- one customer's initial operation --------------------------------------------------------------

class Flow:
    def __init__(self, gen: "LoadGenerator", customer: Customer):
        self.gen = gen
        self.c = customer
        self.client = Client(gen.base_url, gen.stats)
        self.device = f"soak-{uuid.uuid4().hex}"
        self.app_instance = f"app-{uuid.uuid4().hex}"
        self.activation_key = uuid.uuid4().hex   # one per activation, the same on every retry
        self.token: str | None = None
        self.application: dict | None = None
        self.totp: pyotp.TOTP | None = None
        self.token_serial: str | None = None
        self.named = False
        self.last_step_used = -1

    def post(self, path, body, **kw):
        return self.client.request("POST", path, body, token=self.token,
                                   headers={"X-Device-ID": self.device, **kw.pop("headers", {})}, **kw)

    def get(self, path, **kw):
        return self.client.request("GET", path, token=self.token, headers={"X-Device-ID": self.device}, **kw)

    def unexpected(self, step: str, r):
        raise Unclear(f"{step}: {r.status_code} {r.text[:300]}")

    # The flow is a loop over "where am I": every answer says what to do next, so a lost
    # answer costs one more round, never the customer.
    def run(self, deadline: float) -> None:
        step = "legacy_login"
        while step != "done":
            if time.monotonic() > deadline:
                raise Stranded(f"not finished in time (at {step})")
            self.gen.where[self.c.number] = step
            step = getattr(self, "step_" + step)()
        self.gen.where.pop(self.c.number, None)

    def step_legacy_login(self) -> str:
        r = self.post("/api/v1/migration/login", {"customer_number": self.c.number, "password": LEGACY_PASSWORD})
        if r.status_code == 200:
            self.token = r.json()["session_token"]
            nxt = r.json()["next_step"]
            return {"otp_awaiting_call": "otp_application", "otp_activation": "otp_application"}.get(nxt, nxt) \
                if nxt != "done" else "final_login"
        if r.status_code == 409 and code_of(r) == "already_migrated":
            return "login"
        self.unexpected("legacy_login", r)

    def step_secret_questions(self) -> str:
        r = self.post("/api/v1/migration/secret-questions", {"answers": ANSWERS, "confirmed": True})
        if r.status_code == 200:
            return r.json()["next_step"]
        if r.status_code in (401, 409):          # session lost, or already done: ask again
            self.gen.stats.resume("secret_questions")
            return "legacy_login"
        self.unexpected("secret_questions", r)

    def step_password_change(self) -> str:
        r = self.post("/api/v1/migration/password", {
            "current_login_password": LEGACY_PASSWORD, "new_login_password": NEW_LOGIN,
            "new_login_password_confirmation": NEW_LOGIN, "current_confirmation_password": LEGACY_PIN,
            "new_confirmation_password": NEW_CONFIRMATION,
            "new_confirmation_password_confirmation": NEW_CONFIRMATION})
        if r.status_code == 200:
            return "otp_application"
        if r.status_code in (401, 409):
            self.gen.stats.resume("password_change")
            return "legacy_login"
        self.unexpected("password_change", r)

    def step_login(self) -> str:
        """The normal login after migration (with the OTP once the token is active)."""
        body = {"login_id": self.c.number, "password": NEW_LOGIN}
        if self.totp is not None:
            body["otp"] = self.next_code()
        r = self.post("/api/v1/login", body)
        if r.status_code == 200 and "session_token" in r.json():
            self.token = r.json()["session_token"]
            return "otp_application" if self.totp is None else ("display_name" if not self.named else "done")
        if r.status_code == 200 and r.json().get("challenge") == "secret_question":
            ch = r.json()
            r2 = self.post("/api/v1/login/challenge", {"challenge_id": ch["challenge_id"],
                                                       "answer": RIGHT[ch["question"]["id"]]})
            if r2.status_code == 200:
                self.token = r2.json()["session_token"]
                return "otp_application" if self.totp is None else "display_name"
            return "login"
        if r.status_code == 401 and code_of(r) == "otp_required" and self.totp is None:
            raise Stranded("the token is active but the activation answer was lost")
        if r.status_code == 401 and self.totp is not None:
            return "login"                      # a code already used: the next one
        self.unexpected("login", r)

    def step_otp_application(self) -> str:
        if self.totp is not None:
            return "display_name"
        r = self.get("/api/v1/me/phones")
        if r.status_code == 401:
            return "legacy_login"
        if r.status_code != 200:
            self.unexpected("phones", r)
        [phone] = r.json()
        r = self.post("/api/v1/otp/applications", {
            "email": self.c.email, "email_confirmation": self.c.email,
            "activation_password": ACTIVATION_PASSWORD, "activation_password_confirmation": ACTIVATION_PASSWORD,
            "phone_id": phone["phone_id"], "confirmation_password": NEW_CONFIRMATION})
        if r.status_code == 201:
            self.application = r.json()
            return "call"
        if r.status_code == 401:
            return "legacy_login"
        if r.status_code == 409 and code_of(r) == "otp_application_in_progress":
            # Submitted before, the answer lost: the call and the mail finish it.
            self.gen.stats.resume("otp_application")
            return "call" if self.application else "call_any"
        if r.status_code == 409 and code_of(r) == "otp_token_already_active":
            raise Stranded("the token is active but the activation answer was lost")
        self.unexpected("otp_application", r)

    def _call(self, to: str):
        url = self.gen.base_url + WEBHOOK_PATH
        form = {"CallSid": "CA" + uuid.uuid4().hex, "AccountSid": "AC" + "0" * 32, "From": self.c.e164,
                "To": to, "CallStatus": "ringing", "Direction": "inbound"}
        sig = twilio_signature(self.gen.auth_token, url, form)
        r = self.client.request("POST", WEBHOOK_PATH, data=urllib.parse.urlencode(form).encode(),
                                headers={"Content-Type": "application/x-www-form-urlencoded",
                                         "X-Twilio-Signature": sig})
        if r.status_code != 200:
            self.unexpected("call", r)

    def step_call(self) -> str:
        self._call(self.application["call_to"].replace("-", ""))
        return "mail"

    def step_call_any(self) -> str:
        for number in self.gen.toll_free:
            self._call(number)
        return "mail"

    def step_mail(self) -> str:
        mail = self.gen.mailbox_wait(self.c.email, self.gen.mail_wait)
        if mail is None:
            # No mail yet: the call may have been lost with a crashed phone_auth. Look again.
            if self.application:
                r = self.get(f"/api/v1/otp/applications/{self.application['application_id']}")
                if r.status_code == 200:
                    status = r.json()["status"]
                    if status in ("expired", "failed"):
                        self.application = None
                        return "otp_application"
                    if status in ("verified", "issued"):
                        return "mail"          # the mail is on its way (notifier catching up)
                elif r.status_code == 401:
                    self.token = None
            self.gen.stats.resume("call_again")
            return "call" if self.application else "call_any_or_apply"
        text = mail.get_body(("plain",)).get_content()
        self.ids = (SERVICE_ID_RE.search(text).group(1), USER_ID_RE.search(text).group(1))
        return "activate"

    def step_call_any_or_apply(self) -> str:
        # Without the application's id, the migration status tells whether it still waits.
        self.token = None
        return "legacy_login"

    def step_activate(self) -> str:
        service_id, user_id = self.ids
        r = self.client.request("POST", "/api/v1/otp-app/activate", {
            "service_id": service_id, "user_id": user_id, "activation_password": ACTIVATION_PASSWORD,
            "agreed": True}, headers={"X-App-Instance-ID": self.app_instance,
                                      "Idempotency-Key": self.activation_key})
        if r.status_code == 200:
            result = r.json()
            self.token_serial = result["token_serial"]
            self.totp = pyotp.parse_uri(result["otpauth_uri"])
            self.gen.secrets.add("totp_secrets", self.totp.secret)
            return "display_name"
        raise Stranded(f"activation refused after the mail: {r.status_code} {r.text[:300]}")

    def step_display_name(self) -> str:
        if self.named:
            return "final_login"
        r = self.client.request("PUT", f"/api/v1/otp-app/tokens/{self.token_serial}/display-name",
                                {"suffix": "スマホ"}, headers={"X-App-Instance-ID": self.app_instance})
        if r.status_code == 200:
            self.named = True
            return "final_login"
        self.unexpected("display_name", r)

    def next_code(self) -> str:
        """A code for a time step not used before (a retried login must not replay one)."""
        step = max(int(time.time()) // 30, self.last_step_used + 1)
        self.last_step_used = step
        code = self.totp.at(step * 30)
        self.gen.secrets.add("otp_codes", code)
        return code

    def step_final_login(self) -> str:
        if self.totp is None:
            return "otp_application"
        r = self.post("/api/v1/login", {"login_id": self.c.number, "password": NEW_LOGIN, "otp": self.next_code()})
        if r.status_code == 200 and "session_token" in r.json():
            return "done"
        if r.status_code == 200 and r.json().get("challenge"):
            return "login"
        if r.status_code == 401:
            # The code's step was used by a login whose answer was lost: the next step's code.
            self.gen.stats.resume("final_login")
            if self.last_step_used > int(time.time()) // 30 + 1:
                time.sleep(5)
            return "final_login"
        self.unexpected("final_login", r)


# -- the generator ---------------------------------------------------------------------------------

class LoadGenerator:
    def __init__(self, base_url: str, mailbox, *, auth_token: str | None = None,
                 toll_free: tuple[str, ...] = ("0120000110", "0120000111"), clients: int = 20,
                 flow_timeout: float = 600.0, mail_wait: float = 20.0, log=print,
                 monitor_every: float = 15.0):
        self.base_url = base_url
        self.mailbox = mailbox
        self.auth_token = auth_token or DEV_AUTH_TOKEN
        self.toll_free = toll_free
        self.clients = clients
        self.flow_timeout = flow_timeout
        self.mail_wait = mail_wait
        self.log = log
        self.monitor_every = monitor_every
        self.stats = Stats()
        self.secrets = Secrets()
        self._mail_lock = threading.Lock()
        self._mail_cache: dict[str, object] = {}
        self._mail_seen = 0.0
        self.expected_requests = 1
        self.where: dict[str, str] = {}      # customer number → step in progress

    def where_summary(self) -> str:
        s = self.stats
        stuck = "" if len(self.where) > 3 else f" {self.where}"
        return (f"completed {s.completed} failed {len(s.failed)} requests {s.requests} "
                f"retries {sum(s.retries.values())} at {dict(Counter(self.where.values()))}{stuck}")

    REQUESTS_PER_FLOW = 12   # legacy login … final login, without retries

    def progress(self) -> float:
        """How far the load is, 0…1 (by requests made), for placing faults at random moments."""
        return self.stats.requests / self.expected_requests

    def mailbox_wait(self, to: str, timeout: float):
        """The token mail for ``to``, or None after ``timeout`` (one shared reader of the mail
        directory for all clients, so 20 clients do not each parse every file)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._mail_lock:
                if time.monotonic() - self._mail_seen > 0.3:
                    for msg in self.mailbox.messages:
                        if TOKEN_SUBJECT in str(msg["Subject"]):
                            self._mail_cache.setdefault(str(msg["To"]), msg)
                    self._mail_seen = time.monotonic()
                hit = self._mail_cache.get(to)
            if hit is not None:
                return hit
            if time.monotonic() > deadline:
                return None
            time.sleep(0.3)

    def one(self, customer: Customer) -> None:
        self.secrets.add_customer(customer)
        flow = Flow(self, customer)
        try:
            flow.run(time.monotonic() + self.flow_timeout)
        except (Stranded, Unclear) as exc:
            with self.stats.lock:
                self.stats.failed.append((customer.number, f"{type(exc).__name__}: {exc}"))
            return
        with self.stats.lock:
            self.stats.completed += 1

    def run(self, customers: list[Customer]) -> Stats:
        self.expected_requests = max(1, len(customers) * self.REQUESTS_PER_FLOW)
        stop = threading.Event()

        def monitor():
            while not stop.wait(self.monitor_every):
                self.log("[soak] " + self.where_summary())
        threading.Thread(target=monitor, daemon=True).start()
        try:
            with ThreadPoolExecutor(self.clients) as pool:
                list(pool.map(self.one, customers))
        finally:
            stop.set()
        return self.stats
