# Fieldsync. `make run` for the embedded back-office, `make test` for everything CI runs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

MARIADB_URL ?= mysql://root@127.0.0.1:3306/test
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint typecheck test-sqlite test-mariadb test-browser serve bench clean

$(VENV)/.installed: requirements.txt scripts/system-deps.sh tests/js/package-lock.json client/pyproject.toml
	bash scripts/system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# The reference device client (client/, docs/client.md), editable: the end-to-end suite runs its CLI.
	$(PY) -m pip install --quiet --disable-pip-version-check -e client
	# tus-js-client, for the attachment tests (tests/test_attachments_tus_js.py).
	npm ci --prefix tests/js --no-audit --no-fund --silent
	touch $@

venv: $(VENV)/.installed

run: venv
	DEBUG=1 $(PY) manage.py migrate --noinput -v0
	DEBUG=1 $(PY) manage.py seed_demo
	@echo
	@echo "  Fieldsync back-office: http://127.0.0.1:8000/admin/"
	@echo "  API docs:              http://127.0.0.1:8000/api/docs/"
	@echo "  Demo logins (password fieldsync-demo):"
	@echo "    admin  (superuser)          olivia (compliance officer)   mark (manager)"
	@echo "    alice, bob (field workers, team north)   carol (field worker, team south)"
	@echo
	DEBUG=1 $(PY) manage.py runserver 127.0.0.1:8000

lint: venv
	ruff check .
	ruff format --check .
	DEBUG=1 $(PY) manage.py makemigrations --check --dry-run

typecheck: venv
	DEBUG=1 mypy .

# The embedded default, whatever the calling shell exports.
test-sqlite: venv
	env -u DATABASE_URL -u REDIS_URL -u CELERY_TASK_ALWAYS_EAGER pytest

test-mariadb: venv
	bash scripts/test-services.sh

# The officer's review in a real browser alone: Playwright drives Debian's chromium
# (`apt-get install chromium`; `playwright install` is never needed). Part of test-sqlite too.
test-browser: venv
	env -u DATABASE_URL -u REDIS_URL -u CELERY_TASK_ALWAYS_EAGER pytest -m browser -rs

test: lint typecheck test-sqlite test-mariadb

# Benchmarks, not part of `make test`: MariaDB + Redis on 127.0.0.1 (own database bench_fieldsync,
# Redis DB 8, gunicorn on 8700-8799), 3-7 minutes; prints a table, writes docs/benchmarks.md.
bench: venv
	$(PY) -m bench.run

# Production-style: gunicorn, a Celery worker and beat (Procfile), from env vars.
serve: venv
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	honcho start -f Procfile

clean:
	rm -rf $(VENV) var
