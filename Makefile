# nurture — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: demo test venv install install-test lint format messages bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The embedded demo: SQLite, the scheduler in-process, the touches of every channel through the console.
demo: install
	env -u DATABASE_URL -u REDIS_URL DEBUG=1 $(PY) manage.py migrate --noinput
	env -u DATABASE_URL -u REDIS_URL DEBUG=1 $(PY) manage.py load_demo
	env -u DATABASE_URL -u REDIS_URL DEBUG=1 NURTURE_CONSOLE_ALL_CHANNELS=1 $(PY) manage.py rundemo $(HOST):$(PORT)

# With DATABASE_URL (PostgreSQL) and REDIS_URL set the tests run against them; otherwise SQLite + eager Celery.
test: install-test
	$(VENV)/bin/ruff check .
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

messages: install
	$(PY) manage.py makemessages -l zh_Hans --ignore '.venv/*' --ignore 'tests/*' --ignore 'var/*' --ignore 'staticfiles/*'
	$(PY) manage.py compilemessages --ignore '.venv/*'

bench: install
	$(PY) manage.py bench ingest

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
