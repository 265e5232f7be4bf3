# The two commands a newcomer needs: `make run` and `make test`. Both build .venv themselves.
#   make run  RUN_ARGS="--instances 2"     extra options for `tsunagi run` (see tsunagi run --help)
#   make test PYTEST_ARGS="tests/e2e -x"   extra options for pytest
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench soak db clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Roles, database and schema: idempotent, so it runs before every start.
db: $(STAMP)
	$(BIN)/tsunagi db setup

# Every service, the relay and (without SMTP_HOST/SMTP_PORT) a local SMTP sink, in the
# foreground; Ctrl-C stops them all.
# The local demo: DEMO_MODE=1 (the phone screen's demo call button; `make run DEMO_MODE=0` hides
# it) and the README's demo customers, seeded in the background once /health answers
# (idempotent; it gives up when `tsunagi run` ends first).
run: db
	$(BIN)/tsunagi demo seed --wait 180 --quiet-unless-ready & DEMO_MODE=$${DEMO_MODE:-1} $(BIN)/tsunagi run $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m tests.setup_machine
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Slow soak (tests/soak, -m slow): 1,000 complete initial operations by 20 clients under
# injected faults, ~25 min on 2 shared cores. SOAK_FLOWS=N SOAK_CLIENTS=N; SOAK_PG_RESTART=0
# kills the database's backends instead of restarting the (shared) PostgreSQL server.
soak: $(STAMP)
	$(BIN)/python -m tests.setup_machine
	$(BIN)/python -m pytest -m slow --override-ini="addopts=-ra" tests/soak $(PYTEST_ARGS)

bench: db
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) build *.egg-info .run
