"""`tsunagi report migration`: the cut-over week's picture for the bank's project office.

How many imported customers reached each migration step, how many are stuck at a step for
more than N days, and locks and failures per day (Japan time). Read-only: it connects as the
``auditor`` role (AUDITOR_DATABASE_URL) and aggregates ``audit.events`` inside PostgreSQL, so
the log is never loaded into this process. Output: text, ``--json``, or ``--html FILE`` (one
self-contained page, inline SVG charts, no JavaScript).
"""
from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone

from services.cli._common import add_debug_flag, add_json_flag, emit_json

# (step, event type that marks it reached); the customer is data.customer_number or stream id.
STEPS = (
    ("imported", "legacy_customer_imported"),
    ("legacy_login", "legacy_login_succeeded"),
    ("questions", "secret_questions_registered"),
    ("passwords", "passwords_changed"),
    ("otp_applied", "otp_application_submitted"),
    ("phone_verified", "phone_verification_succeeded"),
    ("token_issued", "token_issued"),
    ("activated", "token_activated"),
)
LOCKS = ("credential_locked", "secret_answers_locked", "otp_locked", "mail_otp_locked")
FAILURES = ("legacy_login_failed", "login_failed", "credential_check_failed", "challenge_failed",
            "secret_answer_failed", "otp_verification_failed", "otp_activation_failed",
            "phone_verification_attempt_failed", "mail_otp_verification_failed", "mail_failed")
TZ = "Asia/Tokyo"


def register(subparsers) -> None:
    rep = subparsers.add_parser("report", help="reports for the project office",
                                description="Reports computed from the event log (read-only).")
    sub = rep.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    m = sub.add_parser(
        "migration", help="migration funnel, stuck customers, locks and failures per day",
        description="Customers per migration step (" + ", ".join(s for s, _ in STEPS) + "), "
                    "customers stuck at their last step for more than --stuck-days, and locks "
                    "and failures per day (Japan time).")
    m.add_argument("--stuck-days", type=float, default=3.0, metavar="N",
                   help="a customer is stuck when the last step reached is older than N days (default 3)")
    m.add_argument("--as-of", type=datetime.fromisoformat, metavar="ISO-TIME",
                   help="compute 'stuck' as of this time (default now)")
    m.add_argument("--html", metavar="FILE", help="also write an HTML page with charts to FILE")
    add_json_flag(m)
    add_debug_flag(m)
    m.set_defaults(func=cmd_migration)


def compute(conn, *, stuck_days: float, as_of: datetime) -> dict:
    step_case = " ".join(f"WHEN '{t}' THEN {i}" for i, (_, t) in enumerate(STEPS))
    types = [t for _, t in STEPS]
    rows = conn.execute(f"""
        WITH reached AS (
            SELECT coalesce(data ->> 'customer_number',
                            substr(stream_name, strpos(stream_name, '-') + 1)) AS customer,
                   CASE event_type {step_case} END AS idx, min(recorded_at) AS at
              FROM audit.events WHERE event_type = ANY(%(types)s)
             GROUP BY 1, 2),
        last AS (SELECT DISTINCT ON (customer) customer, idx, at FROM reached
                  ORDER BY customer, idx DESC)
        SELECT r.idx, count(*) AS reached,
               (SELECT count(*) FROM last l WHERE l.idx = r.idx) AS at_step,
               (SELECT count(*) FROM last l WHERE l.idx = r.idx AND l.at < %(cutoff)s) AS stuck
          FROM reached r GROUP BY r.idx ORDER BY r.idx""",
        {"types": types, "cutoff": as_of - timedelta(days=stuck_days)}).fetchall()
    by_idx = {idx: (reached, at_step, stuck) for idx, reached, at_step, stuck in rows}
    last = len(STEPS) - 1
    funnel = [{"step": name, "reached": by_idx.get(i, (0, 0, 0))[0],
               "at_step": by_idx.get(i, (0, 0, 0))[1],
               "stuck": 0 if i == last else by_idx.get(i, (0, 0, 0))[2]}
              for i, (name, _) in enumerate(STEPS)]
    daily = conn.execute("""
        SELECT (recorded_at AT TIME ZONE %(tz)s)::date AS day,
               count(*) FILTER (WHERE event_type = ANY(%(locks)s)) AS locks,
               count(*) FILTER (WHERE event_type = ANY(%(failures)s)) AS failures,
               count(*) FILTER (WHERE event_type = 'token_activated') AS activated
          FROM audit.events WHERE event_type = ANY(%(all)s)
         GROUP BY 1 ORDER BY 1""",
        {"tz": TZ, "locks": list(LOCKS), "failures": list(FAILURES),
         "all": list(LOCKS) + list(FAILURES) + ["token_activated"]}).fetchall()
    return {"as_of": as_of.isoformat(), "stuck_days": stuck_days, "funnel": funnel,
            "daily": [{"day": d.isoformat(), "locks": lk, "failures": f, "activated": a}
                      for d, lk, f, a in daily]}


def cmd_migration(args) -> int:
    import psycopg

    from services.cli import CommandFailed
    from services.config import Settings

    as_of = args.as_of or datetime.now(timezone.utc)
    if as_of.tzinfo is None:
        raise CommandFailed("--as-of needs a UTC offset, e.g. 2025-01-10T09:00:00+09:00", code=2)
    try:
        conn = psycopg.connect(Settings().auditor_database_url, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise CommandFailed(f"cannot connect as auditor: {str(exc).strip()}") from None
    with conn:
        report = compute(conn, stuck_days=args.stuck_days, as_of=as_of)
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(render_html(report))
    if args.json:
        emit_json(report)
    else:
        print(render_text(report))
    return 0


def render_text(report: dict) -> str:
    lines = [f"Migration report as of {report['as_of']} (stuck = last step older than "
             f"{report['stuck_days']:g} days)", "",
             f"{'step':<16}{'reached':>10}{'at step':>10}{'stuck':>10}"]
    for s in report["funnel"]:
        lines.append(f"{s['step']:<16}{s['reached']:>10}{s['at_step']:>10}{s['stuck']:>10}")
    lines += ["", f"{'day (JST)':<12}{'locks':>8}{'failures':>10}{'activated':>11}"]
    for d in report["daily"]:
        lines.append(f"{d['day']:<12}{d['locks']:>8}{d['failures']:>10}{d['activated']:>11}")
    if not report["daily"]:
        lines.append("(no locks, failures or activations yet)")
    return "\n".join(lines)


def _funnel_svg(funnel: list[dict]) -> str:
    width, bar_h, gap, label_w = 720, 28, 8, 150
    top = max((s["reached"] for s in funnel), default=0) or 1
    h = len(funnel) * (bar_h + gap) + gap
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
             f'aria-label="migration funnel">']
    for i, s in enumerate(funnel):
        y = gap + i * (bar_h + gap)
        w = (width - label_w - 80) * s["reached"] / top
        x = label_w + ((width - label_w - 80) - w) / 2
        parts.append(f'<text x="0" y="{y + bar_h * 0.7:.1f}" font-size="13">{html.escape(s["step"])}</text>')
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="#2a6fb0"/>')
        if s["stuck"]:
            ws = w * s["stuck"] / max(s["reached"], 1)
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{ws:.1f}" height="{bar_h}" fill="#d9822b">'
                         f'<title>stuck {s["stuck"]}</title></rect>')
        parts.append(f'<text x="{width - 70}" y="{y + bar_h * 0.7:.1f}" font-size="13">{s["reached"]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _line_svg(daily: list[dict]) -> str:
    width, height, pad = 720, 260, 40
    series = (("locks", "#c0392b"), ("failures", "#d9822b"), ("activated", "#27ae60"))
    if not daily:
        return "<p>(no data yet)</p>"
    top = max(max(d[k] for k, _ in series) for d in daily) or 1
    n = len(daily)

    def xy(i, v):
        x = pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        return x, height - pad - (height - 2 * pad) * v / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="locks, failures and activations per day">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#888"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#888"/>',
             f'<text x="4" y="{pad}" font-size="11">{top}</text>']
    for i, d in enumerate(daily):
        x, _ = xy(i, 0)
        parts.append(f'<text x="{x:.1f}" y="{height - pad + 16}" font-size="10" text-anchor="middle">'
                     f'{html.escape(d["day"][5:])}</text>')
    for j, (key, colour) in enumerate(series):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, d[key]) for i, d in enumerate(daily)))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>')
        parts.append(f'<text x="{width - pad - 220 + j * 75}" y="16" font-size="12" fill="{colour}">{key}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(s['step'])}</td><td>{s['reached']}</td>"
                   f"<td>{s['at_step']}</td><td>{s['stuck']}</td></tr>" for s in report["funnel"])
    return f"""<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><title>移行状況レポート / Migration report</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:first-child{{text-align:left}}</style>
</head><body>
<h1>移行状況レポート / Migration report</h1>
<p>As of {html.escape(report['as_of'])}; stuck = last step reached more than {report['stuck_days']:g} days ago.</p>
<h2>Funnel</h2>{_funnel_svg(report['funnel'])}
<table><tr><th>step</th><th>reached</th><th>at step</th><th>stuck</th></tr>{rows}</table>
<h2>Per day (JST)</h2>{_line_svg(report['daily'])}
</body></html>
"""
