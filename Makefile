# scorestream: two commands for a fresh machine (Python 3.11+, Java 17+, Maven).
#   make demo   create the venv, install, start a local Kafka broker, watch a live worker
#   make test   create the venv, install, run every test (the suite starts its own broker)
#               after installing Debian's kcat, prometheus and chromium packages when missing

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
KAFKA  := $(PYTHON) deploy/kafka/kafka_local.py
STAMP  := $(VENV)/.installed
# The slowest tests are listed at the end of every run: `make test` must stay under 20 minutes.
PYTEST_ARGS ?= --durations=15
# Unit tests and doctests (no broker) run on every core; integration tests, which start brokers
# and time takeovers, one at a time.
UNIT_PATHS := tests/unit models streams schemas
UNIT_ARGS  ?= -n auto

.PHONY: demo test venv system-deps lint typecheck unit integration broker-start broker-stop clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# kcat, prometheus/promtool and chromium: real outside programs the integration tests drive.
system-deps:
	@sh deploy/system-deps.sh

# The demo starts (and stops) its own broker unless SCORESTREAM_KAFKA_BOOTSTRAP names one.
demo: venv
	@$(KAFKA) fetch >/dev/null
	@$(VENV)/bin/scorestream demo $(DEMO_ARGS)

# The type check (one core for about half a minute) runs beside the integration tests, which
# mostly wait on brokers and workers; make test fails when either fails.
test: venv system-deps
	$(KAFKA) fetch >/dev/null
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(UNIT_ARGS) $(PYTEST_ARGS) $(UNIT_PATHS)
	@$(VENV)/bin/mypy > $(VENV)/mypy.log 2>&1 & typing=$$!; \
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration; tests=$$?; \
	wait $$typing; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.log; \
	[ $$tests -eq 0 ] && [ $$typed -eq 0 ]

unit: venv
	$(PY) -m pytest $(UNIT_ARGS) -q $(UNIT_PATHS)

integration: venv system-deps
	$(PY) -m pytest tests/integration -q

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

broker-start:
	$(KAFKA) start

broker-stop:
	$(KAFKA) stop

clean:
	-$(KAFKA) stop
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
