"""The browser tests need Debian's Chromium, which `make test` installs (tests/setup_machine.py);
a machine without it fails them with that message instead of skipping them unseen."""
from pathlib import Path

import pytest

from tests.browser.journey import CHROMIUM


@pytest.fixture(autouse=True, scope="session")
def chromium_installed():
    assert Path(CHROMIUM).exists(), (f"{CHROMIUM} is missing: `make test` installs Debian's "
                                     "chromium (python -m tests.setup_machine)")
