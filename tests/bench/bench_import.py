"""Legacy import benchmark (issue 3, item 1): 100,000 generated customers imported through the
real identity service by the CLI path (`tsunagi import-legacy`'s `run_import`), records/s
printed; then the same file again (idempotent: every line "unchanged"). `--quick`: 5,000.

Set-up of its own: a fresh database and a fresh RabbitMQ vhost, the identity service started
as its own process exactly as `tsunagi run` starts it (`services.cli._launch`), all removed at
the end. The generated file mixes the old system's verifier schemes (pbkdf2_sha256, bcrypt)
and the phone notations customers wrote (hyphens, brackets, full-width digits), plus a few bad
lines that must be rejected, so the service does all of its per-line work. Verifiers are well
formed but not computed (the import never verifies a password).
"""
from __future__ import annotations

import base64
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from services import db
from services.config import Settings
from tests import vhosts

ROOT = Path(__file__).resolve().parents[2]
BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
BAD_EVERY = 1000            # one bad line per this many (rejected, never stops the run)


def _phone(rng: random.Random) -> str:
    a, b = rng.randrange(1000, 10000), rng.randrange(1000, 10000)
    style = rng.randrange(4)
    if style == 0:
        return f"090-{a}-{b}"
    if style == 1:
        return f"080{a}{b}"
    if style == 2:
        return f"(0172){a % 100:02d}-{b}"
    return f"０７０－{a}－{b}".translate(str.maketrans("0123456789", "０１２３４５６７８９"))


def generate(path: Path, n: int, seed: int = 20250105) -> int:
    """Write ``n`` records (about 1 in BAD_EVERY deliberately bad); returns how many are bad."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10**9, 10**10), n)
    bad = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("customer_number,login_password_verifier,confirmation_pin_verifier,phones,email\n")
        for i, number in enumerate(numbers):
            salt = base64.b64encode(rng.randbytes(9)).decode()
            pbkdf2 = f"pbkdf2_sha256$260000${salt}${base64.b64encode(rng.randbytes(32)).decode()}"
            bcrypt = "$2b$10$" + "".join(rng.choice(BCRYPT_ALPHABET) for _ in range(53))
            login, pin = (pbkdf2, bcrypt) if i % 2 else (bcrypt, pbkdf2)
            phones = ";".join(_phone(rng) for _ in range(rng.randrange(1, 4)))
            email = f"user{number}@example.jp" if i % 3 else ""
            if i % BAD_EVERY == BAD_EVERY - 1:
                login, bad = "PlainTextPassword1", bad + 1          # a plaintext verifier
            f.write(f"{number:010d},{login},{pin},{phones},{email}\n")
    return bad


def _die_with_parent() -> None:
    """The service process gets SIGTERM if the benchmark dies without stopping it."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_identity(env: dict, log_path: Path) -> subprocess.Popen:
    """The identity service in its own process; returns once it answers ``ping`` over RPC."""
    from nameko.standalone.rpc import ClusterRpcProxy

    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "services.cli._launch", "--config",
                             str(ROOT / "deploy" / "nameko.yml"), "identity.service"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with ClusterRpcProxy({"AMQP_URI": env["AMQP_URI"]}, timeout=5) as rpc:
                rpc.identity.ping()
                return proc
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the identity service did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")


def main(args) -> list[tuple[str, bool]]:
    from services.cli.import_legacy import run_import

    n = 5_000 if args.quick else 100_000
    settings = Settings()
    dbname = f"tsunagi_bench_import_{uuid.uuid4().hex[:8]}"
    vhost = f"tsunagi_bench_import_{uuid.uuid4().hex[:8]}"
    if not vhosts.create(vhost):
        raise RuntimeError("could not create a RabbitMQ vhost (rabbitmqctl)")
    amqp_uri = vhosts.uri_for(settings.amqp_uri, vhost)
    db.setup(settings, dbname, log=lambda *_: None)
    env = {**os.environ, "AMQP_URI": amqp_uri, "DATABASE_URL": db.url_for(settings.database_url, dbname),
           "PSYCOPG_WAIT_FUNC": "wait_selector", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    proc = None
    targets: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "legacy.csv"
        try:
            t0 = time.perf_counter()
            bad = generate(path, n)
            print(f"generated {n:,} customers ({bad} bad lines) in {time.perf_counter() - t0:.1f} s", flush=True)
            proc = start_identity(env, Path(tmp) / "identity.log")
            first = run_import(path, amqp_uri=amqp_uri, operator="bench", progress=sys.stderr.isatty())
            print(f"import:    {first.total:,} lines, {first.imported:,} imported, {first.rejected} rejected "
                  f"in {first.seconds:.1f} s → {first.rate:,.0f} records/s", flush=True)
            again = run_import(path, amqp_uri=amqp_uri, operator="bench", progress=sys.stderr.isatty())
            print(f"re-import: {again.total:,} lines, {again.unchanged:,} unchanged, {again.rejected} rejected "
                  f"in {again.seconds:.1f} s → {again.rate:,.0f} records/s", flush=True)
            targets.append((f"{n:,} customers imported, every bad line rejected",
                            first.imported == n - bad and first.rejected == bad))
            targets.append(("re-import changes nothing (idempotent)",
                            again.unchanged == n - bad and again.imported == 0))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            db.drop_database(settings, dbname)
            vhosts.delete(vhost)
    return targets


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    for target, ok in main(p.parse_args()) or ():
        print(("ok   " if ok else "MISS ") + target)
