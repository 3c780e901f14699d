# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make run   - install, migrate, seed, and start web + worker + beat (Ctrl-C stops them all)
#   make test  - the whole suite against PostgreSQL and Redis (+ a smoke test of the embedded default)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
MANAGE := $(VENV)/bin/python manage.py
export UV_PYTHON_DOWNLOADS := never

TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/billing
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/billing_bench

.PHONY: install run test chaos lint bench bench-scheduler bench-deadletters bench-monitoring bench-status bench-workers bench-progress

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==0.13.9"

# The local environment file: .env.example with every value commented out (the built-in
# defaults: the embedded database and broker) except debug on and console logs. Created once;
# edit it to point at PostgreSQL / Redis. Every manage.py / celery command in a plain shell reads it.
.env:
	sed -E -e 's/^([A-Z][A-Z0-9_]*=)/# \1/' -e 's/^# DJANGO_DEBUG=.*/DJANGO_DEBUG=1/' \
	  -e 's/^# LOG_FORMAT=.*/LOG_FORMAT=console/' .env.example > $@
	@echo "created .env from .env.example with the local defaults (debug on, embedded database and broker under var/); edit it to change them"

run: export DJANGO_DEBUG ?= 1
run: export LOG_FORMAT ?= console
run: .env install
	$(MANAGE) migrate --noinput
	$(MANAGE) seed_schedules
	$(MANAGE) seed_demo_data --if-empty
	$(MANAGE) ensure_admin
	exec $(VENV)/bin/honcho --no-colour -f Procfile start

test: export DATABASE_URL = $(TEST_DATABASE_URL)
test: export CELERY_BROKER_URL = $(TEST_REDIS_URL)
test: export DJANGO_DEBUG = 0
test: export DJANGO_SECRET_KEY = test-only-secret-key-not-used-anywhere-else-0123456789
test: export DJANGO_SECURE_SSL_REDIRECT = 0
test: export DJANGO_ENV_FILE =
test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The long fault-injection run: the cycle of faults repeated for FAULTS_MINUTES (default 10).
chaos: export DATABASE_URL = $(TEST_DATABASE_URL)
chaos: export CELERY_BROKER_URL = $(TEST_REDIS_URL)
chaos: export DJANGO_DEBUG = 0
chaos: export DJANGO_SECRET_KEY = test-only-secret-key-not-used-anywhere-else-0123456789
chaos: export DJANGO_SECURE_SSL_REDIRECT = 0
chaos: export DJANGO_ENV_FILE =
chaos: export FAULTS_MINUTES ?= 10
chaos: install
	$(VENV)/bin/pytest tests/faults -s $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# Benchmarks run by hand on their own database (results: bench/README.md).
BENCHES := bench bench-scheduler bench-deadletters bench-monitoring bench-status bench-workers bench-progress
$(BENCHES): export DATABASE_URL = $(BENCH_DATABASE_URL)
$(BENCHES): export DJANGO_DEBUG = 0
$(BENCHES): export DJANGO_ENV_FILE =
$(BENCHES): export DJANGO_SECRET_KEY = bench-only-secret-key-not-used-anywhere-else-0123456789
bench-deadletters: export LOG_LEVEL = error
bench-monitoring: export LOG_LEVEL = warning

bench: install
	$(VENV)/bin/python bench/jobs.py $(BENCH_ARGS)

bench-scheduler: install
	$(VENV)/bin/python bench/scheduler.py $(BENCH_ARGS)

bench-deadletters: install
	$(VENV)/bin/python bench/deadletters.py $(BENCH_ARGS)

bench-monitoring: install
	$(VENV)/bin/python bench/monitoring.py $(BENCH_ARGS)

bench-status: export LOG_LEVEL = warning
bench-status: install
	$(VENV)/bin/python bench/status.py $(BENCH_ARGS)

bench-workers: install
	$(VENV)/bin/python bench/workers.py $(BENCH_ARGS)

bench-progress: install
	$(VENV)/bin/python bench/progress.py $(BENCH_ARGS)
