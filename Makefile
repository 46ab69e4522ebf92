# One venv, one set of commands. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: run test gen check-gen lint ci clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The whole mesh on embedded defaults (SQLite, simulated exchanges, demo users), with a demo.
run: $(STAMP)
	$(VENV)/bin/nija up --demo

test: $(STAMP)
	$(PY) -m pytest -q

# gen/ is produced from protos/ by this command only.
gen: $(STAMP)
	rm -rf gen/nija
	mkdir -p gen
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $$(find protos -name '*.proto' | sort)
	find gen/nija -type d -exec touch {}/__init__.py \;

check-gen: $(STAMP)
	$(PY) tools/check_gen.py

node_modules/.bin/buf: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

lint: node_modules/.bin/buf
	node_modules/.bin/buf lint

clean:
	rm -rf $(VENV) node_modules .pytest_cache
