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
run: db
	$(BIN)/tsunagi run $(RUN_ARGS)

test: $(STAMP)
	$(BIN)/python -m tests.setup_machine
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(STAMP)
	$(BIN)/python -m tests.setup_machine
	$(BIN)/python -m pytest -m slow --override-ini="addopts=-ra" tests/soak $(PYTEST_ARGS)

bench: db
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) build *.egg-info .run
