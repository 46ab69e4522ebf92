# One venv, one set of commands. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: run test nginx gen check-gen lint breaking ci clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The whole mesh on embedded defaults (SQLite, simulated exchanges, demo users), with a demo.
run: $(STAMP)
	$(VENV)/bin/nija up --demo

test: $(STAMP) nginx
	$(PY) -m pytest -q

# The edge's tests run Debian's nginx: installed if missing (the system's service is not started).
nginx:
	@tools/install_nginx.sh

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

# Wire changes must stay compatible with the protos of the last release (services roll out one at
# a time): .ci/proto-baseline names that commit; move it forward when a release lands.
breaking: node_modules/.bin/buf
	@base=$$(head -1 .ci/proto-baseline); git cat-file -e "$$base^{commit}" 2>/dev/null \
	  || git fetch --quiet --unshallow 2>/dev/null || git fetch --quiet origin "$$base" 2>/dev/null || true
	node_modules/.bin/buf breaking --against ".git#ref=$$(head -1 .ci/proto-baseline)"
	@echo "buf breaking: compatible with $$(head -1 .ci/proto-baseline)"

clean:
	rm -rf $(VENV) node_modules .pytest_cache
