/* つないでネ！ット reference front end: one page, plain JavaScript, no libraries.
 *
 * The session lives in an HttpOnly cookie (the gateway moves it there because every request
 * says X-Session-Transport: cookie); unsafe requests carry X-CSRF-Token from the readable
 * tsunagi_csrf cookie. Field rules are checked here for quick feedback and again by the
 * server, whose Japanese problem details and per-field errors are shown as they come.
 */
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const DEMO = document.body.dataset.demo === "1";
  const ALNUM_6_12 = /^[A-Za-z0-9]{6,12}$/;
  const EMAIL = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/;
  const SCREENS_WITHOUT_SESSION = ["login", "legacy", "challenge", "activate", "displayname", "done"];

  const state = load("tsunagi.state") || {};
  function save() { sessionStorage.setItem("tsunagi.state", JSON.stringify(state)); }
  function load(key) { try { return JSON.parse(sessionStorage.getItem(key)); } catch (e) { return null; } }

  function randomId(prefix) {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return prefix + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  function stored(key, prefix) {
    let v = localStorage.getItem(key);
    if (!v) { v = randomId(prefix); localStorage.setItem(key, v); }
    return v;
  }
  const DEVICE_ID = stored("tsunagi.device", "web-");
  const APP_INSTANCE = stored("tsunagi.app", "app-");

  // ------------------------------------------------------------------ HTTP

  class Problem extends Error {
    constructor(status, body) {
      super((body && body.detail) || "通信エラーが発生しました。");
      this.status = status;
      this.body = body || {};
    }
  }

  function cookie(name) {
    const hit = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
    return hit ? decodeURIComponent(hit.slice(name.length + 1)) : "";
  }

  let pending = 0;
  function busy(delta) {
    pending += delta;
    $("#busy").hidden = pending === 0;
  }

  async function api(method, path, body, opts) {
    opts = opts || {};
    const headers = { "Accept": "application/json", "X-Session-Transport": "cookie",
      "X-Device-ID": DEVICE_ID };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = cookie("tsunagi_csrf");
    if (opts.app) headers["X-App-Instance-ID"] = APP_INSTANCE;
    if (!opts.quiet) busy(1);
    let response;
    try {
      response = await fetch(path, { method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body), signal: opts.signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new Problem(0, { detail: "通信できませんでした。通信環境をご確認のうえ、もう一度お試しください。" });
    } finally {
      if (!opts.quiet) busy(-1);
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) throw new Problem(response.status, data);
    return data;
  }

  // ------------------------------------------------------------------ screens and messages

  let leaveHooks = [];
  function show(name, opts) {
    leaveHooks.forEach((f) => f());
    leaveHooks = [];
    $$(".screen").forEach((s) => { s.hidden = s.id !== "s-" + name; });
    const screen = $("#s-" + name);
    document.title = screen.dataset.title + " | <青森みちのく>つないでネ！ット";
    if (!(opts && opts.keepAlert)) clearAlert();
    state.screen = name;
    save();
    $("#logout").hidden = !state.signedIn;
    const h1 = $("h1", screen);
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    const enter = ENTER[name];
    if (enter) enter();
  }

  function clearAlert() {
    const a = $("#alert");
    a.hidden = true;
    a.className = "alert";
    a.textContent = "";
  }

  function alertBox(message, list, ok) {
    const a = $("#alert");
    a.textContent = message;
    a.className = ok ? "alert ok" : "alert";
    if (list && list.length) {
      const ul = document.createElement("ul");
      list.forEach((m) => { const li = document.createElement("li"); li.textContent = m; ul.appendChild(li); });
      a.appendChild(ul);
    }
    a.hidden = false;
    a.scrollIntoView({ block: "nearest" });
  }

  function errorSlot(el) {
    const field = el.closest(".field");
    return field ? $(".error", field) : null;
  }

  function clearErrors(form) {
    $$(".error", form).forEach((e) => { e.textContent = ""; });
    $$("[aria-invalid]", form).forEach((e) => e.removeAttribute("aria-invalid"));
  }

  function findField(form, path) {
    const byPath = form.querySelector('[data-path="' + path + '"]');
    if (byPath) return byPath;
    const last = path.split(".").pop();
    return form.querySelector('[name="' + path + '"]') || form.querySelector('[name="' + last + '"]') ||
      form.querySelector('[data-error-key="' + last + '"]');
  }

  function flatten(errors, prefix, out) {
    out = out || [];
    if (Array.isArray(errors)) {
      errors.forEach((m) => { if (typeof m === "string") out.push([prefix, m]); else flatten(m, prefix, out); });
    } else if (errors && typeof errors === "object") {
      Object.keys(errors).forEach((k) => flatten(errors[k], prefix ? prefix + "." + k : k, out));
    } else if (typeof errors === "string") {
      out.push([prefix, errors]);
    }
    return out;
  }

  // Shows {field: message} next to the fields; what has no field goes into the alert box.
  function showErrors(form, errors, detail) {
    clearErrors(form);
    const loose = [];
    let first = null;
    flatten(errors).forEach(([path, message]) => {
      const el = path ? findField(form, path) : null;
      const slot = el ? errorSlot(el) : (path ? form.querySelector("#e-" + path.replace(/[^A-Za-z0-9_-]/g, "_")) : null);
      if (slot) {
        slot.textContent = slot.textContent ? slot.textContent + " " + message : message;
        if (el) { el.setAttribute("aria-invalid", "true"); first = first || el; }
      } else {
        loose.push(message);
      }
    });
    alertBox(detail || "入力内容に誤りがあります。各項目のメッセージをご確認ください。", loose);
    if (first) first.focus();
  }

  function showProblem(form, problem) {
    if (problem.name === "AbortError") return;
    const body = problem.body || {};
    if (problem.status === 401 && state.signedIn && !form) {
      state.signedIn = false;
      save();
      alertBox("一定時間操作がなかったため、ログアウトしました。もう一度ログインしてください。");
      show("login", { keepAlert: true });
      return;
    }
    if (confirmationPasswordChangeRequired(problem)) return;
    let detail = body.detail || problem.message;
    if (body.correlation_id && problem.status >= 500) detail += "（お問い合わせ番号: " + body.correlation_id + "）";
    if (form && body.errors) showErrors(form, body.errors, detail);
    else alertBox(detail);
  }

  function values(form) {
    const out = {};
    $$("input, select", form).forEach((el) => {
      if (!el.name) return;
      if (el.type === "checkbox") out[el.name] = el.checked;
      else if (el.type === "radio") { if (el.checked) out[el.name] = el.value; }
      else out[el.name] = el.value;
    });
    return out;
  }

  // Runs a form: browser-side rules first (no request when they fail), then the server.
  function onSubmit(name, check, send) {
    const form = $('form[data-form="' + name + '"]');
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearAlert();
      clearErrors(form);
      const v = values(form);
      const errors = check ? check(v, form) : {};
      if (Object.keys(errors).length) { showErrors(form, errors); return; }
      const buttons = $$("button", form);
      buttons.forEach((b) => { b.dataset.wasDisabled = b.disabled ? "1" : ""; b.disabled = true; });
      try {
        await send(v, form);
      } catch (e) {
        showProblem(form, e);
      } finally {
        buttons.forEach((b) => { b.disabled = b.dataset.wasDisabled === "1"; });
        if (name === "questions") syncQuestionsButton();
      }
    });
  }

  function add(errors, key, message) {
    if (!errors[key]) errors[key] = message;
  }

  // ------------------------------------------------------------------ field rules (the guides)

  function isHalfWidth(ch) {
    const c = ch.codePointAt(0);
    return (c >= 0x20 && c <= 0x7e) || (c >= 0xff61 && c <= 0xff9f) || c === 0xa5 || c === 0x203e;
  }
  function isBadChar(ch) {
    const c = ch.codePointAt(0);
    return c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0) || c >= 0x1f000 || (c >= 0x2600 && c <= 0x27bf) ||
      (c >= 0xfe00 && c <= 0xfe0f) || c === 0x200d;
  }
  function fullWidthProblem(value, max, label) {
    const chars = Array.from(value);
    if (!value || chars.every((c) => c === "\u3000")) return label + "を入力してください。";
    if (chars.some(isBadChar)) return label + "に使用できない文字（絵文字・制御文字など）が含まれています。";
    if (chars.some(isHalfWidth)) return label + "は全角文字で入力してください。半角文字は使用できません。";
    if (chars.length > max) return label + "は全角" + max + "文字以内で入力してください。";
    return null;
  }
  function passwordRule(errors, v, key, label) {
    if (!v[key]) add(errors, key, label + "を入力してください。");
    else if (!ALNUM_6_12.test(v[key])) add(errors, key, label + "は半角英数字6～12桁で入力してください。");
  }

  // ------------------------------------------------------------------ login (top) and step-up

  async function signedIn() {
    state.signedIn = true;
    state.kind = "customer";
    save();
    show("menu");
  }

  onSubmit("login", (v) => {
    const e = {};
    if (!v.login_id) add(e, "login_id", "ログインIDを入力してください。");
    else if (!/^[A-Za-z0-9]{6,12}$/.test(v.login_id)) add(e, "login_id", "ログインIDは半角英数字6～12桁で入力してください。");
    if (!v.password) add(e, "password", "ログインパスワードを入力してください。");
    if (v.otp && !/^\d{6}$/.test(v.otp)) add(e, "otp", "ワンタイムパスワードは半角数字6桁で入力してください。");
    return e;
  }, async (v, form) => {
    const body = { login_id: v.login_id, password: v.password };
    if (v.otp) body.otp = v.otp;
    const r = await api("POST", "/api/v1/login", body);
    form.reset();
    if (r.challenge === "secret_question") {
      state.challenge = { id: r.challenge_id, question: r.question.text };
      save();
      show("challenge");
      return;
    }
    if (r.next_step === "login_password_change") {
      // A temporary password from an operator (R-LEG-4): the session can only change it.
      state.signedIn = true;
      state.kind = "migration";
      save();
      show("loginpw");
      return;
    }
    await signedIn();
  });

  onSubmit("challenge", (v) => {
    const e = {};
    const p = fullWidthProblem(v.answer, 10, "回答");
    if (p) add(e, "answer", p);
    return e;
  }, async (v, form) => {
    const r = await api("POST", "/api/v1/login/challenge", { challenge_id: state.challenge.id, answer: v.answer });
    form.reset();
    if (r.challenge) { alertBox("もう一度ログインしてください。"); show("login", { keepAlert: true }); return; }
    await signedIn();
  });

  // ------------------------------------------------------------------ temporary passwords (R-LEG-4)

  onSubmit("loginpw", (v) => loginPasswordRules({}, v), async (v, form) => {
    await api("POST", "/api/v1/me/login-password", v);
    form.reset();
    // The API has ended every session of the customer: the next login is with the new password.
    Object.keys(state).forEach((k) => delete state[k]);
    save();
    await api("POST", "/api/v1/logout", undefined, { quiet: true }).catch(() => {});   // clears the cookies
    alertBox("ログインパスワードを変更しました。新しいログインパスワードで、もう一度ログインしてください。", [], true);
    show("login", { keepAlert: true });
  });

  // Any check of the confirmation password may answer that it is still an operator's temporary
  // one: change it here, then go back to the screen that was refused and send it again.
  function confirmationPasswordChangeRequired(problem) {
    const body = problem.body || {};
    if (problem.status !== 403 || body.code !== "password_change_required" ||
        body.credential !== "confirmation_password" || !state.signedIn) return false;
    if (state.screen !== "confirmpw") state.returnTo = state.screen;
    save();
    alertBox(body.detail || problem.message);
    show("confirmpw", { keepAlert: true });
    return true;
  }

  function backFromConfirmationPassword(message) {
    const back = state.returnTo || "menu";
    delete state.returnTo;
    save();
    // The temporary password typed there is no longer valid: the new one has to be entered.
    $$('#s-' + back + ' input[name="confirmation_password"]').forEach((el) => { el.value = ""; });
    if (message) alertBox(message, [], true);
    show(back, { keepAlert: !!message });
  }

  onSubmit("confirmpw", (v) => confirmationPasswordRules({}, v), async (v, form) => {
    await api("POST", "/api/v1/me/confirmation-password", v);
    form.reset();
    backFromConfirmationPassword("確認用パスワードを変更しました。新しい確認用パスワードを入力して、もう一度お手続きください。");
  });
  $("#confirmpw-back").addEventListener("click", () => backFromConfirmationPassword(null));

  // ------------------------------------------------------------------ initial operation

  function goToStep(next) {
    const screen = { secret_questions: "questions", password_change: "password", otp_application: "apply",
      otp_awaiting_call: "phone", otp_activation: "token", done: "done" }[next];
    if (next === "otp_awaiting_call" && !state.application) { show("apply"); return; }
    if (next === "otp_activation" && !state.issued) { show("activate"); return; }
    show(screen || "login");
  }

  onSubmit("legacy", (v) => {
    const e = {};
    if (!v.customer_number) add(e, "customer_number", "お客さま番号を入力してください。");
    else if (!/^\d{10}$/.test(v.customer_number)) add(e, "customer_number", "お客さま番号は数字10桁で入力してください。");
    if (!v.password) add(e, "password", "ログインパスワードを入力してください。");
    return e;
  }, async (v, form) => {
    const r = await api("POST", "/api/v1/migration/login", v);
    form.reset();
    Object.keys(state).forEach((k) => delete state[k]);
    state.signedIn = true;
    state.kind = "migration";
    save();
    goToStep(r.next_step);
  });

  let catalogue = null;
  async function enterQuestions() {
    const box = $("#question-fields");
    if (!catalogue) catalogue = await api("GET", "/api/v1/secret-questions/catalogue").catch((e) => { showProblem(null, e); return []; });
    if (box.childElementCount) return;
    for (let i = 0; i < 3; i++) {
      const n = i + 1;
      const q = document.createElement("div");
      q.className = "field";
      const options = ['<option value="">＜選択してください＞</option>'].concat(
        catalogue.map((c) => '<option value="' + escapeHtml(c.id) + '">' + escapeHtml(c.text) + "</option>"));
      q.innerHTML =
        '<label for="q' + n + '">【必須】質問' + n + "</label>" +
        '<select id="q' + n + '" name="q' + n + '" data-path="answers.' + i + '.question_id" aria-describedby="e-q' + n + '">' + options.join("") + "</select>" +
        '<p class="error" id="e-q' + n + '"></p>';
      const a = document.createElement("div");
      a.className = "field";
      a.innerHTML =
        '<label for="a' + n + '">【必須】回答' + n + "</label>" +
        '<p class="hint" id="h-a' + n + '">全角10文字以内</p>' +
        '<input id="a' + n + '" name="a' + n + '" data-path="answers.' + i + '.answer" autocomplete="off" aria-describedby="h-a' + n + " e-a" + n + '">' +
        '<p class="error" id="e-a' + n + '"></p>';
      box.appendChild(q);
      box.appendChild(a);
    }
  }
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function syncQuestionsButton() { $("#questions-submit").disabled = !$("#confirmed").checked; }
  $("#confirmed").addEventListener("change", syncQuestionsButton);

  onSubmit("questions", (v) => {
    const e = {};
    const chosen = [];
    for (let n = 1; n <= 3; n++) {
      if (!v["q" + n]) add(e, "answers." + (n - 1) + ".question_id", "質問" + n + "を選択してください。");
      else chosen.push(v["q" + n]);
      const p = fullWidthProblem(v["a" + n] || "", 10, "回答" + n);
      if (p) add(e, "answers." + (n - 1) + ".answer", p);
    }
    if (new Set(chosen).size !== chosen.length) add(e, "answers", "秘密の質問はそれぞれ異なるものを3つ選択してください。");
    if (!v.confirmed) add(e, "confirmed", "回答内容をご確認のうえ、「確認しました。」にチェックしてください。");
    return e;
  }, async (v) => {
    const answers = [1, 2, 3].map((n) => ({ question_id: v["q" + n], answer: v["a" + n] }));
    const r = await api("POST", "/api/v1/migration/secret-questions", { answers, confirmed: v.confirmed });
    goToStep(r.next_step);
  });

  // R-INI-2, shared by step 4 and the changes after an operator's re-issue or reset (R-LEG-4).
  function loginPasswordRules(e, v) {
    passwordRule(e, v, "current_login_password", "現在のログインパスワード");
    passwordRule(e, v, "new_login_password", "新しいログインパスワード");
    if (!e.new_login_password && !(/[a-z]/.test(v.new_login_password) && /[A-Z]/.test(v.new_login_password)))
      add(e, "new_login_password", "新しいログインパスワードは英大文字と英小文字を混在させてください（半角英数字・大小文字混在の6～12桁）。");
    if (!e.new_login_password && v.new_login_password === v.current_login_password)
      add(e, "new_login_password", "「現在のログインパスワード」と同一のものはご利用いただけません。");
    if (v.new_login_password_confirmation !== v.new_login_password)
      add(e, "new_login_password_confirmation", "新しいログインパスワード（再入力）が一致しません。確認のため同じものを再度入力してください。");
    return e;
  }
  function confirmationPasswordRules(e, v) {
    passwordRule(e, v, "current_confirmation_password", "現在の確認用パスワード");
    passwordRule(e, v, "new_confirmation_password", "新しい確認用パスワード");
    if (!e.new_confirmation_password && v.new_confirmation_password === v.current_confirmation_password)
      add(e, "new_confirmation_password", "「現在の確認用パスワード」と同一のものはご利用いただけません。");
    if (v.new_confirmation_password_confirmation !== v.new_confirmation_password)
      add(e, "new_confirmation_password_confirmation", "新しい確認用パスワード（再入力）が一致しません。確認のため同じものを再度入力してください。");
    return e;
  }

  onSubmit("password", (v) => {
    const e = {};
    loginPasswordRules(e, v);
    confirmationPasswordRules(e, v);
    if (!e.new_confirmation_password && v.new_confirmation_password === v.new_login_password)
      add(e, "new_confirmation_password", "新しいログインパスワードと新しい確認用パスワードは異なるものを設定してください。");
    return e;
  }, async (v, form) => {
    const r = await api("POST", "/api/v1/migration/password", v);
    form.reset();
    goToStep(r.next_step);
  });

  async function enterApply() {
    const box = $("#phone-options");
    try {
      const phones = await api("GET", "/api/v1/me/phones");
      state.phones = phones;
      save();
      box.textContent = "";
      if (!phones.length) {
        box.textContent = "認証可能な電話番号が表示されない場合は、銀行窓口でお届出電話番号の変更が必要です。";
      }
      phones.forEach((p, i) => {
        const label = document.createElement("label");
        const input = document.createElement("input");
        input.type = "radio";
        input.name = "phone_id";
        input.value = p.phone_id;
        input.checked = i === 0 && phones.length === 1;
        label.appendChild(input);
        label.appendChild(document.createTextNode(p.masked));
        box.appendChild(label);
      });
    } catch (e) { showProblem(null, e); }
  }

  onSubmit("apply", (v) => {
    const e = {};
    if (!v.email) add(e, "email", "メールアドレスを入力してください。");
    else if (!EMAIL.test(v.email)) add(e, "email", "メールアドレスの形式が正しくありません。半角英数字記号で入力してください。");
    if (v.email_confirmation !== v.email) add(e, "email_confirmation", "メールアドレスと確認用のメールアドレスが一致しません。");
    if (!/^\d{4,8}$/.test(v.activation_password)) add(e, "activation_password", "利用開始パスワードは半角数字4～8桁で入力してください。");
    if (v.activation_password_confirmation !== v.activation_password)
      add(e, "activation_password_confirmation", "利用開始パスワードと確認用の利用開始パスワードが一致しません。");
    if (!v.phone_id) add(e, "phone_id", "電話番号認証を行う電話番号を選択してください。");
    if (!v.confirmation_password) add(e, "confirmation_password", "確認用パスワードを入力してください。");
    return e;
  }, async (v, form) => {
    const created = await api("POST", "/api/v1/otp/applications", v);
    state.application = Object.assign({ phone_id: v.phone_id, email: v.email }, created);
    state.issued = null;
    save();
    form.reset();
    show("phone");
  });

  // -- the phone screen: countdown, long poll, 「確定する」

  function telHref(number) { return "tel:" + String(number).replace(/[^0-9+]/g, ""); }

  function enterPhone() {
    const app = state.application;
    if (!app) { show("apply"); return; }
    $("#call-from").textContent = app.call_from_masked;
    const to = $("#call-to");
    to.textContent = app.call_to;
    to.href = telHref(app.call_to);
    $("#demo-call").hidden = !DEMO;
    $("#phone-retry").hidden = true;
    $("#phone-confirm").disabled = false;
    $("#phone-status").textContent = "お電話をお待ちしています。";
    const deadline = Date.parse(app.expires_at) || (Date.now() + 120000);
    const tick = () => {
      const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
      $("#countdown").textContent = String(Math.min(left, 120));
    };
    tick();
    const timer = setInterval(tick, 250);
    const abort = new AbortController();
    let active = true;
    leaveHooks.push(() => { active = false; clearInterval(timer); abort.abort(); });
    (async () => {
      while (active) {
        try {
          const s = await api("GET", "/api/v1/otp/applications/" + encodeURIComponent(app.application_id) + "?wait=25",
            undefined, { signal: abort.signal, quiet: true });
          if (!active) return;
          if (handleStatus(s)) return;
        } catch (e) {
          if (!active || e.name === "AbortError") return;
          showProblem(null, e);
          await new Promise((r) => setTimeout(r, 2000));
        }
      }
    })();
  }

  // true when the screen is left (issued) or can no longer move on (expired / failed)
  function handleStatus(s) {
    if (s.status === "issued") {
      state.issued = { service_id: s.service_id, user_id: s.user_id };
      save();
      show("token");
      return true;
    }
    if (s.status === "expired" || s.status === "failed") {
      $("#phone-status").textContent = s.status === "expired"
        ? "120秒以内にお電話を確認できなかったため、電話番号認証を完了できませんでした。もう一度お申し込みください。"
        : "電話番号認証を完了できませんでした。もう一度お申し込みください。";
      alertBox($("#phone-status").textContent);
      $("#phone-retry").hidden = false;
      $("#phone-confirm").disabled = true;
      return true;
    }
    if (s.status === "verified") $("#phone-status").textContent = "電話番号を確認しました。トークンを発行しています…";
    return false;
  }

  $("#phone-confirm").addEventListener("click", async () => {
    try {
      const s = await api("GET", "/api/v1/otp/applications/" + encodeURIComponent(state.application.application_id));
      if (!handleStatus(s)) alertBox("まだ電話番号認証が完了していません。ご登録電話番号から認証先電話番号にお電話ください。");
    } catch (e) { showProblem(null, e); }
  });
  $("#phone-retry").addEventListener("click", () => { state.application = null; save(); show("apply"); });
  $("#demo-call").addEventListener("click", async () => {
    try {
      await api("POST", "/api/v1/demo/inbound-call", { phone_id: state.application.phone_id, call_to: state.application.call_to });
      $("#phone-status").textContent = "デモ: 登録電話番号から発信しました。";
    } catch (e) { showProblem(null, e); }
  });

  function enterToken() {
    const i = state.issued || {};
    $("#token-email").textContent = (state.application && state.application.email) || "";
    $("#token-service-id").textContent = i.service_id || "";
    $("#token-user-id").textContent = i.user_id || "";
  }

  // -- steps 8 and 9 happen in the OTP app; this page plays the app (X-App-Instance-ID)

  function enterActivate() {
    const i = state.issued || {};
    const form = $('form[data-form="activate"]');
    if (i.service_id && !form.service_id.value) form.service_id.value = i.service_id;
    if (i.user_id && !form.user_id.value) form.user_id.value = i.user_id;
    $("#activation-result").hidden = !state.token;
    form.hidden = !!state.token;
    if (state.token) showToken();
  }

  onSubmit("activate", (v) => {
    const e = {};
    if (!v.service_id) add(e, "service_id", "サービスIDを入力してください。");
    if (!v.user_id) add(e, "user_id", "ユーザIDを入力してください。");
    if (!/^\d{4,8}$/.test(v.activation_password)) add(e, "activation_password", "利用開始パスワードは半角数字4～8桁で入力してください。");
    if (!v.agreed) add(e, "agreed", "アプリ利用上の注意をご確認のうえ、「上記の内容に同意する。」にチェックしてください。");
    return e;
  }, async (v, form) => {
    const r = await api("POST", "/api/v1/otp-app/activate", v, { app: true });
    // The key URI holds the TOTP secret: shown once, kept in memory only (never in storage).
    tokenUri = r.otpauth_uri;
    state.token = { serial: r.token_serial, display_name: r.display_name };
    state.issued = null;
    save();
    form.reset();
    form.hidden = true;
    $("#activation-result").hidden = false;
    showToken();
  });

  let tokenUri = null;
  function showToken() {
    const uri = tokenUri;
    if (!uri) { $("#otpauth-uri").textContent = "（キー URI は一度だけ表示されます）"; return; }
    $("#otpauth-uri").textContent = uri;
    $("#otpauth-link").href = uri;
    const secret = new URL(uri.replace(/^otpauth:/, "https:")).searchParams.get("secret");
    const out = $("#current-otp");
    const refresh = () => totp(secret).then((c) => { out.textContent = c; }).catch(() => { out.textContent = "—"; });
    refresh();
    const t = setInterval(refresh, 1000);
    leaveHooks.push(() => clearInterval(t));
  }

  function base32(s) {
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits = 0, value = 0;
    const out = [];
    for (const ch of s.replace(/=+$/, "").toUpperCase()) {
      value = (value << 5) | alphabet.indexOf(ch);
      bits += 5;
      if (bits >= 8) { out.push((value >>> (bits - 8)) & 255); bits -= 8; }
    }
    return new Uint8Array(out);
  }
  async function totp(secret) {
    const key = await crypto.subtle.importKey("raw", base32(secret), { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
    const counter = Math.floor(Date.now() / 30000);
    const msg = new Uint8Array(8);
    new DataView(msg.buffer).setUint32(4, counter);
    new DataView(msg.buffer).setUint32(0, Math.floor(counter / 2 ** 32));
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, msg));
    const o = mac[19] & 15;
    const code = ((mac[o] & 127) << 24 | mac[o + 1] << 16 | mac[o + 2] << 8 | mac[o + 3]) % 1000000;
    return String(code).padStart(6, "0");
  }

  function enterDisplayName() {
    if (!state.token) { show("activate"); return; }
    $("#display-name").textContent = state.token.display_name || "青森みちのく銀行";
  }

  onSubmit("displayname", (v) => {
    const e = {};
    if (v.suffix) {
      const p = fullWidthProblem(v.suffix, 8, "追加文言");
      if (p) add(e, "suffix", p);
    }
    return e;
  }, async (v) => {
    const r = await api("PUT", "/api/v1/otp-app/tokens/" + encodeURIComponent(state.token.serial) + "/display-name",
      { suffix: v.suffix || null }, { app: true });
    state.token.display_name = r.display_name;
    save();
    $("#done-text").textContent = "トークン表示名を「" + r.display_name + "」に設定しました。以上で初期設定は完了となります。";
    show("done", { keepAlert: true });
  });

  function enterDone() {
    // The migration session has done its job: end it, so the next login starts clean.
    if (state.signedIn) api("POST", "/api/v1/logout", undefined, { quiet: true }).catch(() => {});
    state.signedIn = false;
    save();
    $("#logout").hidden = true;
  }

  // ------------------------------------------------------------------ transfer and Select E-mail

  onSubmit("transfer", (v) => {
    const e = {};
    if (!/^\d{4}$/.test(v.bank_code)) add(e, "bank_code", "金融機関コードは半角数字4桁で入力してください。");
    if (!/^\d{3}$/.test(v.branch_code)) add(e, "branch_code", "支店番号は半角数字3桁で入力してください。");
    if (!/^\d{1,7}$/.test(v.account_number)) add(e, "account_number", "口座番号は半角数字7桁以内で入力してください。");
    if (!v.name || Array.from(v.name).length > 48) add(e, "name", "受取人名を48文字以内で入力してください。");
    if (!/^[1-9]\d{0,10}$/.test(v.amount)) add(e, "amount", "振込金額は1円以上の整数で入力してください。");
    return e;
  }, async (v) => {
    const operation = { type: "transfer", amount: parseInt(v.amount, 10), payee: {
      bank_code: v.bank_code, branch_code: v.branch_code, account_type: v.account_type,
      account_number: v.account_number, name: v.name } };
    const typeName = { ordinary: "普通", current: "当座", savings: "貯蓄" }[v.account_type];
    state.pending = { kind: "transfer", purpose: "transfer", operation, title: "振込内容の確認",
      summary: [["振込先", v.bank_code + "-" + v.branch_code + " " + typeName + " " + v.account_number],
        ["受取人名", v.name], ["振込金額", Number(operation.amount).toLocaleString("ja-JP") + "円"]] };
    save();
    show("confirm");
  });

  async function enterConfirm() {
    const p = state.pending;
    if (!p) { show("menu"); return; }
    $("#confirm-title").textContent = p.title;
    const dl = $("#confirm-summary");
    dl.textContent = "";
    p.summary.forEach(([k, val]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = val;
      div.append(dt, dd);
      dl.appendChild(div);
    });
    $("#mail-otp-sent").textContent = "";
    try {
      const m = await api("GET", "/api/v1/me/authorization-method");
      p.method = m.method;
      save();
      const mail = m.method === "mail_otp";
      $("#mail-otp-block").hidden = !mail;
      $("#f-mail_otp").hidden = !mail;
      $("#f-otp").hidden = mail;
      if (m.mail_otp_locked) alertBox("メール通知パスワードがロックされています。お取引店またはネットバンキング共同受付センターにご連絡ください。");
    } catch (e) { showProblem(null, e); }
  }

  $("#send-mail-otp").addEventListener("click", async () => {
    const p = state.pending;
    try {
      const r = await api("POST", "/api/v1/mail-otp", { purpose: p.purpose, operation: p.operation });
      const until = new Date(r.expires_at).toLocaleTimeString("ja-JP", { hour: "2-digit", minute: "2-digit" });
      $("#mail-otp-sent").textContent = "メール通知パスワードを送信しました（送信先: " + (r.destinations || []).join("、") +
        "、有効期限 " + until + "）。最新のメール通知パスワードを入力してください。";
      $("#mail_otp").focus();
    } catch (e) { showProblem(null, e); }
  });

  onSubmit("authorize", (v) => {
    const e = {};
    const p = state.pending || {};
    if (p.method === "mail_otp" && !/^\d{6}$/.test(v.mail_otp)) add(e, "mail_otp", "メール通知パスワードを入力してください（半角数字6桁）。");
    if (p.method !== "mail_otp" && !/^\d{6}$/.test(v.otp)) add(e, "otp", "ワンタイムパスワードは半角数字6桁で入力してください。");
    if (!v.confirmation_password) add(e, "confirmation_password", "確認用パスワードを入力してください。");
    return e;
  }, async (v, form) => {
    const p = state.pending;
    const factor = p.method === "mail_otp" ? { mail_otp: v.mail_otp } : { otp: v.otp };
    if (p.kind === "transfer") {
      const r = await api("POST", "/api/v1/transactions/authorize",
        Object.assign({ operation: p.operation, confirmation_password: v.confirmation_password }, factor));
      form.reset();
      state.pending = null;
      save();
      $("#accepted-text").textContent = "お振込を受け付けました。取引受付メールを送信しました。";
      $("#accepted-id").textContent = r.authorization_id;
      show("accepted");
      return;
    }
    const changes = p.operation.changes;
    const r = await api("PUT", "/api/v1/notification-addresses",
      Object.assign({ select1: changes.select1, select2: changes.select2, confirmation_password: v.confirmation_password }, factor));
    form.reset();
    state.pending = null;
    state.addresses = r;
    save();
    alertBox("セレクトＥメールサービスの利用内容を変更しました。", [], true);
    show("selectmail", { keepAlert: true });
  });

  function slotText(s) {
    if (!s || !s.address) return "登録なし";
    return (s.enabled ? "利用する" : "利用しない") + (s.receives_mail_otp ? "・メール通知パスワード送信先" : "") +
      (s.mail_otp_pending_confirmation ? "（送信先の確定待ち）" : "");
  }

  async function enterSelectMail() {
    const form = $('form[data-form="selectmail"]');
    try {
      const r = await api("GET", "/api/v1/notification-addresses");
      state.addresses = r;
      save();
      $("#registered-address").textContent = (r.registered && r.registered.address) || "登録なし";
      ["select1", "select2"].forEach((slot) => {
        const s = r[slot] || {};
        form[slot + "_enabled"].checked = !!s.enabled;
        form[slot + "_address"].value = s.address || "";
        form[slot + "_mail_otp"].checked = !!(s.receives_mail_otp || s.mail_otp_pending_confirmation);
        $("#" + slot + "-state").textContent = "現在: " + slotText(s);
      });
      $("#pending-block").hidden = !r.pending_confirmation;
      $("#pending-slot").textContent = r.pending_confirmation === "select2" ? "セレクトメールアドレス２" : "セレクトメールアドレス１";
    } catch (e) { showProblem(null, e); }
  }

  onSubmit("selectmail", (v) => {
    const e = {};
    ["select1", "select2"].forEach((slot, i) => {
      const addr = v[slot + "_address"];
      if (v[slot + "_enabled"] && !addr) add(e, slot + "_address", "利用するセレクトメールアドレスを入力してください。");
      else if (addr && !EMAIL.test(addr)) add(e, slot + "_address", "メールアドレスの形式が正しくありません。半角英数字記号で入力してください。");
      if (v[slot + "_mail_otp"] && !v[slot + "_enabled"]) add(e, slot + "_mail_otp", "利用しないメールアドレスはメール通知パスワードの送信先にできません。");
    });
    return e;
  }, async (v) => {
    const changes = {};
    ["select1", "select2"].forEach((slot) => {
      changes[slot] = { address: v[slot + "_address"] || null, enabled: v[slot + "_enabled"], receives_mail_otp: v[slot + "_mail_otp"] };
    });
    const label = { select1: "セレクトメールアドレス１", select2: "セレクトメールアドレス２" };
    state.pending = { kind: "selectmail", purpose: "settings_change",
      operation: { type: "settings_change", setting: "select_email", changes },
      title: "セレクトＥメールサービス利用変更（確認）",
      summary: ["select1", "select2"].map((s) => [label[s], (changes[s].address || "登録なし") + " ／ " + slotText(changes[s])]) };
    save();
    show("confirm");
  });

  onSubmit("confirmdest", (v) => {
    const e = {};
    if (!/^\d{6}$/.test(v.mail_otp)) add(e, "mail_otp", "メール通知パスワードを入力してください（半角数字6桁）。");
    if (!v.confirmation_password) add(e, "confirmation_password", "確認用パスワードを入力してください。");
    return e;
  }, async (v, form) => {
    await api("POST", "/api/v1/notification-addresses/confirmation", v);
    form.reset();
    alertBox("メール通知パスワードの送信先を確定しました。", [], true);
    show("selectmail", { keepAlert: true });
  });
  $("#resend-dest").addEventListener("click", async () => {
    try {
      await api("POST", "/api/v1/mail-otp", { purpose: "address_confirmation" });
      alertBox("新しい送信先にメール通知パスワードを再送信しました。", [], true);
    } catch (e) { showProblem(null, e); }
  });

  // ------------------------------------------------------------------ biometric login (WebAuthn)

  function b64urlToBuf(s) {
    const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  }
  function bufToB64url(buf) {
    let s = "";
    new Uint8Array(buf).forEach((x) => { s += String.fromCharCode(x); });
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(o) {
    const pk = Object.assign({}, o.publicKey || o);
    pk.challenge = b64urlToBuf(pk.challenge);
    pk.user = Object.assign({}, pk.user, { id: b64urlToBuf(pk.user.id) });
    pk.excludeCredentials = (pk.excludeCredentials || []).map((c) => Object.assign({}, c, { id: b64urlToBuf(c.id) }));
    return pk;
  }
  function requestOptions(o) {
    const pk = Object.assign({}, o.publicKey || o);
    pk.challenge = b64urlToBuf(pk.challenge);
    pk.allowCredentials = (pk.allowCredentials || []).map((c) => Object.assign({}, c, { id: b64urlToBuf(c.id) }));
    return pk;
  }
  function credentialJson(cred) {
    const r = cred.response;
    const response = { clientDataJSON: bufToB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = bufToB64url(r.attestationObject);
      if (r.getTransports) response.transports = r.getTransports();
    }
    if (r.authenticatorData) response.authenticatorData = bufToB64url(r.authenticatorData);
    if (r.signature) response.signature = bufToB64url(r.signature);
    if (r.userHandle) response.userHandle = bufToB64url(r.userHandle);
    return { id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type, response,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {} };
  }
  function webauthnMissing() {
    if (window.PublicKeyCredential && navigator.credentials) return false;
    alertBox("この端末・ブラウザーは生体認証に対応していません。");
    return true;
  }
  function webauthnProblem(e) {
    if (e instanceof Problem) { showProblem(null, e); return; }
    alertBox(e && e.name === "NotAllowedError"
      ? "生体認証が完了しませんでした（キャンセルまたは時間切れ）。もう一度お試しください。"
      : "生体認証を利用できませんでした。もう一度お試しください。");
  }

  // The options are PublicKeyCredential*OptionsJSON plus the gateway's challenge_id.
  function unwrap(r) {
    return { options: r, extra: r.challenge_id ? { challenge_id: r.challenge_id } : {} };
  }

  $("#passkey-register").addEventListener("click", async () => {
    if (webauthnMissing()) return;
    clearAlert();
    try {
      const { options, extra } = unwrap(await api("POST", "/api/v1/webauthn/register/options", {}));
      const cred = await navigator.credentials.create({ publicKey: creationOptions(options) });
      const nickname = /iPhone|Android/.test(navigator.userAgent) ? "スマートフォン" : "この端末";
      await api("POST", "/api/v1/webauthn/register", Object.assign({ credential: credentialJson(cred), nickname }, extra));
      $("#passkey-status").textContent = "この端末を生体認証に登録しました。次回から「生体認証でログイン」をご利用いただけます。";
      loadPasskeys();
    } catch (e) { webauthnProblem(e); }
  });

  $("#passkey-login").addEventListener("click", async () => {
    if (webauthnMissing()) return;
    clearAlert();
    try {
      const { options, extra } = unwrap(await api("POST", "/api/v1/webauthn/login/options", {}));
      const cred = await navigator.credentials.get({ publicKey: requestOptions(options) });
      await api("POST", "/api/v1/webauthn/login", Object.assign({ credential: credentialJson(cred) }, extra));
      await signedIn();
    } catch (e) { webauthnProblem(e); }
  });

  async function loadPasskeys() {
    const ul = $("#passkey-list");
    try {
      const r = await api("GET", "/api/v1/webauthn/credentials", undefined, { quiet: true });
      const list = Array.isArray(r) ? r : (r.credentials || []);
      ul.textContent = "";
      if (!list.length) { ul.textContent = "登録済みの端末はありません。"; return; }
      list.forEach((c) => {
        const li = document.createElement("li");
        const when = c.registered_at ? new Date(c.registered_at).toLocaleString("ja-JP") : "";
        li.textContent = (c.nickname || "生体認証") + (when ? "（" + when + " 登録）" : "") +
          (c.status === "suspended" ? "【停止中】" : "");
        const id = c.passkey_id;
        if (id) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "link-button";
          b.textContent = "削除";
          b.addEventListener("click", async () => {
            try { await api("DELETE", "/api/v1/webauthn/credentials/" + encodeURIComponent(id)); loadPasskeys(); }
            catch (e) { showProblem(null, e); }
          });
          li.append(" ", b);
        }
        ul.appendChild(li);
      });
    } catch (e) { ul.textContent = ""; }
  }

  // ------------------------------------------------------------------ navigation

  function enterChallenge() {
    if (!state.challenge) { show("login"); return; }
    $("#challenge-question").textContent = state.challenge.question;
  }

  const ENTER = { challenge: enterChallenge, questions: enterQuestions, apply: enterApply, phone: enterPhone, token: enterToken,
    activate: enterActivate, displayname: enterDisplayName, done: enterDone, confirm: enterConfirm,
    selectmail: enterSelectMail, biometric: loadPasskeys };

  document.addEventListener("click", (ev) => {
    const go = ev.target.closest("[data-go]");
    if (go) { show(go.dataset.go); return; }
    const action = ev.target.closest("[data-action]");
    if (!action) return;
    if (action.dataset.action === "abort" || action.dataset.action === "skip-otp") logout();
  });

  // A corrected field loses its message at once (the server checks it again on submit).
  document.addEventListener("input", (ev) => {
    const slot = ev.target.closest && ev.target.closest(".field") ? errorSlot(ev.target) : null;
    if (slot && slot.textContent) { slot.textContent = ""; ev.target.removeAttribute("aria-invalid"); }
  });

  async function logout() {
    try { await api("POST", "/api/v1/logout"); } catch (e) { /* the session may be gone already */ }
    Object.keys(state).forEach((k) => delete state[k]);
    save();
    show("login");
  }
  $("#logout").addEventListener("click", logout);

  async function start() {
    const saved = state.screen;
    if (!saved || SCREENS_WITHOUT_SESSION.includes(saved)) { show(saved || "login"); return; }
    try {
      const s = await api("GET", "/api/v1/session", undefined, { quiet: true });
      state.signedIn = true;
      state.kind = s.kind;
      show(saved);
    } catch (e) {
      state.signedIn = false;
      show("login");
    }
  }
  start();
  // Interactive: every handler is attached and the first screen is shown (read by the tests).
  document.documentElement.dataset.readyAt = String(Math.round(performance.now()));
})();
