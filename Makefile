# Every target bootstraps .venv itself; nothing else needs installing on a fresh
# Linux machine with Python 3.11 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# End-to-end modules that `make test` also runs on BACKEND=nats (tests/integration/backends.py).
NATS_E2E := $(addprefix tests/integration/,test_ingest.py test_event_streams.py \
	test_voice_insights.py test_webhook_delivery.py test_tenancy_delivery.py)

.PHONY: demo test bench lint venv clean browser

venv: $(STAMP)

# Re-install only when the project's declared dependencies change.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/callstream demo

# The console's browser tests drive Debian's Chromium (Playwright's own download needs the
# internet); install it where it is missing (as root, which CI is).
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -q
	# The end-to-end modules again on the distributed backend (NATS cluster + PostgreSQL).
	CALLSTREAM_TEST_BACKEND=nats $(BIN)/python -m pytest -q $(NATS_E2E)

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
