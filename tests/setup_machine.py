"""Machine set-up the test suite needs before it starts: the database schema and the
Debian packages the end-to-end tests drive (installed once; a no-op when present)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

# Debian packages named by later suites (telephony, browser). Each entry: (binary, package).
DEBIAN_TOOLS: list[tuple[str, str]] = [
    # `docker compose config` check of docker-compose.yml (tests/integration/test_cli.py);
    # there is no Docker engine here, only the file is validated.
    ("docker-compose", "docker-compose"),
    # The SIP edge of phone verification and its caller (tests/e2e/test_telephony_sip.py).
    ("sipp", "sip-tester"),
    ("kamailio", "kamailio"),
    # Ships only a module (no program to look for): installed together with kamailio.
    ("kamailio", "kamailio-rabbitmq-modules"),
    # The browser the front-end tests drive through Playwright (tests/browser/); Playwright's
    # own browser download does not work here, Debian's build does.
    ("chromium", "chromium"),
    # Japanese glyphs for the screenshots of the browser tests (without: tofu boxes). Not a
    # program: an absolute path is checked for existence instead of looked up on PATH.
    ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", "fonts-noto-cjk"),
]


def ensure_debian_tools() -> None:
    missing = [pkg for binary, pkg in DEBIAN_TOOLS
               if not (os.path.exists(binary) if binary.startswith("/") else shutil.which(binary))]
    if not missing:
        return
    print(f"installing Debian packages: {' '.join(missing)}", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def main() -> int:
    ensure_debian_tools()
    return 0


if __name__ == "__main__":
    sys.exit(main())
