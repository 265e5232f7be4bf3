"""`tsunagi import-legacy FILE`: import the old system's customer records (R-LEG-1).

The CSV (UTF-8, header ``customer_number,login_password_verifier,confirmation_pin_verifier,
phones,email``; extra columns are ignored) is read line by line and sent in batches over RPC to
``identity.import_legacy``, which validates and records every line on its own. Nothing here
judges a record beyond what only the file can tell (encoding, column count): the rules live in
the identity service.

Idempotent: running the same file again changes nothing (lines answer "unchanged"). A bad line
never stops the run; rejected lines are written with their reasons to ``FILE.rejected.csv`` (or
``--rejects PATH``), mode 0600 since they carry verifiers. Exit status: 0 every line imported or
unchanged, 3 finished but some lines were rejected, 1 the run could not finish (the file or the
service; re-running is safe).
"""
from __future__ import annotations

import csv
import getpass
import io
import os
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from services.cli._common import add_debug_flag, add_json_flag, emit_json

COLUMNS = ("customer_number", "login_password_verifier", "confirmation_pin_verifier", "phones", "email")
REJECT_COLUMNS = ("line", "reason", "message", *COLUMNS)
EXIT_REJECTED = 3

LOCAL_REASONS = {  # what only the file can tell; the service explains everything else
    "invalid_encoding": "文字コードがUTF-8ではありません。",
    "wrong_column_count": "項目の数が正しくありません。",
    "service_error": "取込サービスでエラーが発生しました。",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-legacy", help="import legacy customer records from a CSV file (idempotent)",
        description="Import Michinoku Direct customer records (R-LEG-1) through the identity "
                    "service. CSV, UTF-8, header: " + ",".join(COLUMNS) + ". Prints a summary; "
                    "rejected lines go to FILE.rejected.csv with their reasons. Re-running the "
                    "same file changes nothing. Exit 0: all imported or unchanged; 3: some lines "
                    "rejected; 1: the run could not finish (safe to re-run).")
    p.add_argument("file", metavar="FILE", type=Path, help="the CSV file of the old system")
    p.add_argument("--rejects", metavar="PATH", type=Path, default=None,
                   help="where to write rejected lines (default: FILE.rejected.csv)")
    p.add_argument("--batch-size", type=int, default=500, metavar="N",
                   help="records per RPC call (default 500, at most 2000)")
    p.add_argument("--parallel", type=int, default=4, metavar="N",
                   help="batches in flight at once (default 4)")
    p.add_argument("--operator", default=None,
                   help="operator id recorded as the actor of every import event "
                        "(default: $TSUNAGI_OPERATOR or the login name)")
    p.add_argument("--reason", default=None, help="reason recorded with the events (default: the file name)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="RPC timeout per batch (default 300)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    add_debug_flag(p)
    p.set_defaults(func=cmd_import_legacy)


@dataclass
class Summary:
    total: int = 0
    imported: int = 0
    unchanged: int = 0
    rejected: int = 0
    warnings: int = 0
    seconds: float = 0.0
    rejects_path: str | None = None
    reasons: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"total": self.total, "imported": self.imported, "unchanged": self.unchanged,
                "rejected": self.rejected, "warnings": self.warnings, "seconds": round(self.seconds, 3),
                "records_per_second": round(self.rate, 1), "rejects_file": self.rejects_path,
                "reasons": self.reasons}


# -- reading the file --------------------------------------------------------------------------

def _decoded_lines(binary, bad_lines: set[int]):
    """Decode line by line so one line in another encoding rejects that line, not the file."""
    for number, raw in enumerate(binary, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]                                  # a BOM from spreadsheet exports
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield raw.decode("utf-8", errors="replace")


def read_records(path: Path):
    """Yield ("record", dict) for lines to send and ("reject", dict) for lines refused here.
    Raises CommandFailed when the file has no usable header."""
    from services.cli import CommandFailed

    bad_lines: set[int] = set()
    with open(path, "rb") as binary:
        reader = csv.reader(_decoded_lines(binary, bad_lines))
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise CommandFailed(f"{path}: the file is empty") from None
        except csv.Error as exc:
            raise CommandFailed(f"{path}: unreadable header: {exc}") from None
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise CommandFailed(f"{path}: header lacks column(s) {', '.join(missing)}; "
                                f"expected {','.join(COLUMNS)}")
        index = {c: header.index(c) for c in COLUMNS}
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield "reject", {"line": start, "reason": "wrong_column_count", "message": str(exc)}
                continue
            line = start                                   # where the record begins (quoted fields may span lines)
            if not row or all(not cell.strip() for cell in row):
                continue                                   # blank lines are not records
            fields = {c: (row[i] if i < len(row) else "") for c, i in index.items()}
            if any(n in bad_lines for n in range(start, reader.line_num + 1)):
                yield "reject", {"line": line, "reason": "invalid_encoding",
                                 "message": LOCAL_REASONS["invalid_encoding"], **fields}
            elif len(row) != len(header):
                yield "reject", {"line": line, "reason": "wrong_column_count",
                                 "message": LOCAL_REASONS["wrong_column_count"], **fields}
            else:
                yield "record", {"line": line, **fields}


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return max(n, 1)


# -- the command ---------------------------------------------------------------------------------

def run_import(path: Path, *, amqp_uri: str, rejects: Path | None = None, batch_size: int = 500,
               parallel: int = 4, operator: str | None = None, reason: str | None = None,
               timeout: float = 300.0, progress: bool = True, out=None) -> Summary:
    """Import ``path`` through the identity service; returns the summary (also used by the
    benchmark and the tests, which call it in-process).

    Up to ``parallel`` batches are in flight at once, all from this one thread: Nameko's
    standalone proxy sends asynchronous calls and keeps early replies until they are asked for
    (no worker threads, so the command behaves the same with or without eventlet)."""
    from nameko.exceptions import UnknownService
    from nameko.standalone.rpc import ClusterRpcProxy
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from services.cli import CommandFailed

    if not path.is_file():
        raise CommandFailed(f"{path}: no such file")
    batch_size = max(1, min(batch_size, 2000))
    parallel = max(1, min(parallel, 16))
    rejects = rejects or path.with_name(path.name + ".rejected.csv")
    context = {"correlation_id": str(uuid.uuid4()), "actor_kind": "operator",
               "actor_id": operator or os.environ.get("TSUNAGI_OPERATOR") or getpass.getuser(),
               "reason": reason or f"legacy import {path.name}"}
    summary = Summary()
    rejected_rows: list[dict] = []
    console = Console(stderr=True, file=out)
    started = time.perf_counter()

    def account(result: dict, sent: dict | None) -> None:
        summary.total += 1
        status = result.get("status")
        if status == "imported":
            summary.imported += 1
            summary.warnings += len(result.get("warnings") or ())
        elif status == "unchanged":
            summary.unchanged += 1
        else:
            summary.rejected += 1
            code = result.get("reason") or "rejected"
            summary.reasons[code] = summary.reasons.get(code, 0) + 1
            row = {"line": result.get("line"), "reason": code, "message": result.get("message", "")}
            row.update({c: (sent or result).get(c, "") for c in COLUMNS})
            rejected_rows.append(row)

    total_lines = count_lines(path)
    columns = (TextColumn("[bold]import-legacy"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>8.0f} rec/s"), TimeElapsedColumn(), TimeRemainingColumn())
    pending: deque = deque()
    try:
        with Progress(*columns, console=console, disable=not progress, transient=False) as bar, \
                ClusterRpcProxy({"AMQP_URI": amqp_uri, "serializer": "json"}, context_data=context,
                                timeout=timeout) as rpc:
            task = bar.add_task("import", total=total_lines, rate=0.0)

            def send(batch: list[dict]) -> None:
                pending.append((rpc.identity.import_legacy.call_async(batch), batch))

            def collect() -> None:
                reply, batch = pending.popleft()
                try:
                    results = reply.result()
                    if not isinstance(results, list) or len(results) != len(batch):
                        raise RuntimeError("the answer has the wrong number of results")
                except Exception as exc:
                    raise CommandFailed(
                        f"identity.import_legacy failed for lines {batch[0]['line']}–{batch[-1]['line']}: "
                        f"{type(exc).__name__}: {exc}. Earlier lines were recorded; re-running the "
                        f"file is safe (it is idempotent).") from None
                for sent, result in zip(batch, results):
                    account(result, sent)
                elapsed = time.perf_counter() - started
                bar.update(task, advance=len(batch), rate=summary.total / elapsed if elapsed else 0.0)

            batch: list[dict] = []
            for kind, item in read_records(path):
                if kind == "reject":
                    account({"status": "rejected", **item}, item)
                    bar.update(task, advance=1)
                    continue
                batch.append(item)
                if len(batch) >= batch_size:
                    send(batch)
                    batch = []
                    while len(pending) >= parallel:
                        collect()
            if batch:
                send(batch)
            while pending:
                collect()
            bar.update(task, completed=total_lines)
    except UnknownService:
        _finish(summary, rejected_rows, rejects, started)
        raise CommandFailed("the identity service is not running (nobody consumes its RPC queue); "
                            "start it and re-run the file (re-running is safe)") from None
    except BaseException:
        _finish(summary, rejected_rows, rejects, started)   # keep what is known so far
        raise
    _finish(summary, rejected_rows, rejects, started)
    return summary


def _finish(summary: Summary, rows: list[dict], rejects: Path, started: float) -> None:
    summary.seconds = time.perf_counter() - started
    if rows:
        rows.sort(key=lambda r: (r["line"] is None, r["line"] or 0))
        fd = os.open(rejects, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with io.open(fd, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=REJECT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        summary.rejects_path = str(rejects)
    elif rejects.exists():
        rejects.unlink()    # a stale file from an earlier run would mislead the operator


def cmd_import_legacy(args) -> int:
    from services.config import Settings

    summary = run_import(args.file, amqp_uri=Settings().amqp_uri, rejects=args.rejects,
                         batch_size=args.batch_size, parallel=args.parallel, operator=args.operator,
                         reason=args.reason, timeout=args.timeout,
                         progress=not args.no_progress and not args.json and sys.stderr.isatty())
    if args.json:
        emit_json(summary.as_dict())
    else:
        print(f"{summary.total} lines: {summary.imported} imported, {summary.unchanged} unchanged, "
              f"{summary.rejected} rejected ({summary.warnings} warnings) in {summary.seconds:.1f} s, "
              f"{summary.rate:.0f} records/s")
        for code, n in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
            print(f"  rejected {n:>7} × {code}")
        if summary.rejects_path:
            print(f"rejected lines with reasons: {summary.rejects_path}")
    return EXIT_REJECTED if summary.rejected else 0
