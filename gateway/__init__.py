"""The HTTP API front ends call: validation, orchestration, translation; no domain rules."""
