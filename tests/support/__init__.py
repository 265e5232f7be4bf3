"""Set-up that several test modules share: ports, clocks, in-process gateways, services with a relay.

Plain helpers and context managers, no fixtures: each test module keeps its own fixtures (and so
its own scope and configuration) and builds them from these pieces.
"""
