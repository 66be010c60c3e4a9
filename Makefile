# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Daphne's production flags; WEBSOCKET_TIMEOUT must not exceed the layer's group expiry.
WEBSOCKET_TIMEOUT ?= 86400
# No --proxy-headers here: `make run` faces clients directly, so X-Forwarded-For
# would be theirs to forge (the stack and the image run behind nginx and set it).
DAPHNE_FLAGS := --websocket_timeout $(WEBSOCKET_TIMEOUT) --ping-interval 20 --ping-timeout 30 \
	--websocket-max-message-size 65536

.PHONY: run stack soak test test-sqlite test-postgres test-browser screenshots check-deploy lint clean bench bench-full

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-deps: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-deps: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.run-deps

$(VENV)/.bench-deps: requirements.txt requirements-dev.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-bench.txt
	touch $@ $(VENV)/.dev-deps $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/python manage.py migrate --noinput
	@echo
	@echo "  Presence is at http://$(HOST):$(PORT)/"
	@echo "  Make an admin account with: $(BIN)/python manage.py createsuperuser"
	@echo "  DEBUG=1 shows Django's debug pages for errors; the product's own are at"
	@echo "  http://$(HOST):$(PORT)/_errors/404/ (and 403, 500)"
	@echo
	$(BIN)/daphne -b $(HOST) -p $(PORT) $(DAPHNE_FLAGS) presence_site.asgi:application

# The production shape without Docker: Redis, PostgreSQL, two Daphne processes
# and nginx (Debian packages) on loopback, nginx on http://127.0.0.1:8080/.
stack: $(VENV)/.run-deps
	$(BIN)/python -m presence_site.stack --port $(or $(STACK_PORT),8080)

# The stack under churn, chat and presence watchers for SOAK_MINUTES (30), then a verdict
# (exit status 1 if memory, open files, rows, messages or presence went wrong): docs/faults.md.
soak: $(VENV)/.dev-deps
	$(BIN)/python -m presence_site.soak --minutes $(or $(SOAK_MINUTES),30) $(SOAK_ARGS)

# The whole suite on SQLite (memory and Redis layers), then again on PostgreSQL
# (the browser and fault tests once: they bring their own servers and database).
test: test-sqlite test-postgres

test-sqlite: $(VENV)/.dev-deps
	env -u DATABASE_URL $(BIN)/pytest

test-postgres: $(VENV)/.dev-deps
	DATABASE_CONN_MAX_AGE=0 scripts/with-postgres $(BIN)/pytest -m "not browser and not fault"

# The Chromium suite alone.
test-browser: $(VENV)/.dev-deps
	env -u DATABASE_URL $(BIN)/pytest -m browser

# Refresh the committed screenshots in docs/img/ (no other command writes them).
screenshots: $(VENV)/.dev-deps
	env -u DATABASE_URL REFRESH_SCREENSHOTS=1 $(BIN)/pytest -m browser -k screenshots

# The app beside its baselines, each on its own port, with a private Redis:
# docs/benchmarks.md and docs/img/ are rewritten from the run (bench/README.md).
bench: $(VENV)/.bench-deps redis-server
	$(BIN)/python bench/run.py --profile quick $(BENCH_ARGS)

bench-full: $(VENV)/.bench-deps redis-server
	$(BIN)/python bench/run.py --profile full $(BENCH_ARGS)

.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		{ echo "installing redis-server"; apt-get update -qq && apt-get install -y -qq redis-server; }; } || \
		{ echo "the bench needs redis-server: apt-get install redis-server"; exit 1; }

check-deploy: $(VENV)/.run-deps
	DEBUG=0 SECRET_KEY=check-deploy-$$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
	ALLOWED_HOSTS=presence.example.com $(BIN)/python manage.py check --deploy --fail-level WARNING

lint: $(VENV)/.dev-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var staticfiles
