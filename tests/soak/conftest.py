"""`make test` runs the small soak only; the tests marked ``slow`` (the 1,000-flow soak, about
6–14 minutes) are left out of its collection and run when asked for with ``-m slow``
(`make soak`)."""


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        items[:] = [item for item in items if "slow" not in item.keywords]
        config.hook.pytest_deselected(items=slow)
