"""`make test` collects tests/soak for the small soak only; tests marked ``slow`` run when
asked for with ``-m slow`` (`make soak`)."""
import pytest


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow soak: run with `make soak` (pytest -m slow tests/soak)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
