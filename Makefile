# The two commands a new user needs are `make run` and `make test`; everything
# else here is what they are made of. Only python3 (3.11+) must exist beforehand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test test-fast install migrate lint bench lock clean

## run: install, migrate the embedded SQLite default, serve the API with the scheduler
run: $(INSTALLED)
	$(BIN)/omoi-os serve

## test: install, then run the whole test suite (SQLite and PostgreSQL)
test: $(INSTALLED)
	$(BIN)/python -m pytest

## test-fast: the inner loop: everything but the fault suite and the wheel check
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not fault and not packaging" -q

install: $(INSTALLED)

# Exact versions and hashes from requirements.lock; the project itself is
# installed editable on top, with no further resolution.
$(INSTALLED): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(INSTALLED)

migrate: $(INSTALLED)
	$(BIN)/omoi-os migrate

lint: $(INSTALLED)
	$(BIN)/ruff check backend bench examples
	$(BIN)/ruff format --check backend bench examples
	$(BIN)/mypy

bench: $(INSTALLED)
	$(BIN)/python -m bench.run_all

# Re-resolve after changing dependencies in pyproject.toml (needs pip-tools).
lock:
	pip-compile --quiet --extra test --build-deps-for editable --generate-hashes \
		--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
