# mlmesh — one Makefile for set-up, code generation, the local mesh, tests and lint.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
GEN_STAMP := gen/python/.stamp
PROTOS := $(shell find protos -name '*.proto')
SERVICES := services/common services/tracking services/experiments services/training
PYTEST_ARGS ?=
SITE_PACKAGES = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: setup install protos ui ui-dev run demo test bench lint lint-python lint-protos lint-ui constraints clean k8s-validate

setup: install protos ui

# The services depend on mlmesh-api (protos/pyproject.toml), the stubs tools/gen_protos.py
# writes to gen/python: the tools come first, then the stubs, then the editable installs (and
# the path file that put gen/python on sys.path before mlmesh-api goes).
install: $(STAMP)
$(STAMP): constraints.txt requirements-dev.txt protos/pyproject.toml $(addsuffix /pyproject.toml,$(SERVICES))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt
	$(PY) tools/gen_protos.py
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e protos $(addprefix -e ,$(SERVICES))
	rm -f $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mlmesh-gen.pth
	touch $@

# Python + .pyi stubs, the Envoy descriptor set and the OpenAPI document, all from protos/.
protos: $(GEN_STAMP)
$(GEN_STAMP): $(PROTOS) tools/gen_protos.py gateway/openapi.py $(STAMP)
	$(PY) tools/gen_protos.py
	$(PY) -m gateway.openapi gateway/build/descriptors.pb gateway/build/openapi.json
	touch $@

# The web UI (ui/): npm ci when the lock file changes; the API types from the OpenAPI document
# and the production build (ui/dist, served by the gateway) whenever ui/ or the API changes.
UI_SOURCES := $(shell find ui/src -type f ! -name '*.test.ts' ! -name schema.d.ts 2>/dev/null) \
	ui/index.html ui/package.json ui/vite.config.ts ui/tsconfig.json
ui: ui/dist/index.html
ui/node_modules/.package-lock.json: ui/package-lock.json
	cd ui && npm ci --no-audit --no-fund --loglevel=error
	touch $@
ui/dist/index.html: $(UI_SOURCES) ui/node_modules/.package-lock.json $(GEN_STAMP)
	cd ui && npm run --silent gen && npm run --silent build
	touch $@

# Hot reload on http://127.0.0.1:5173 for work on the UI; /api goes to the gateway of `make run`.
ui-dev: ui/node_modules/.package-lock.json $(GEN_STAMP)
	cd ui && npm run --silent gen && npx vite

# The whole mesh on embedded defaults: MLflow, the services and Envoy on 127.0.0.1:8080.
run: setup
	$(PY) -m tools.mesh run

# Realistic runs logged to the local MLflow server with the real mlflow client.
demo: setup
	$(PY) -m tools.demo
	$(PY) -m tools.demo_training

# PostgreSQL server binaries and Debian's chromium are installed if missing (CI); the tests start
# throwaway clusters. The UI's unit tests (Vitest) run first, the browser tests inside pytest.
test: setup
	bash tools/ensure_postgres.sh >/dev/null
	bash tools/ensure_chromium.sh >/dev/null
	cd ui && npx vitest run
	$(BIN)/pytest $(PYTEST_ARGS)

# Side-by-side performance against a real mlflow server, tuning, and the web UI in a browser;
# writes docs/benchmarks.md.
bench: setup
	bash tools/ensure_postgres.sh >/dev/null
	bash tools/ensure_chromium.sh >/dev/null
	$(PY) -m bench.experiments
	$(PY) -m bench.gateway_hop
	$(PY) -m bench.footprint
	$(PY) -m bench.tuning
	$(PY) -m bench.statistics
	$(PY) -m bench.ui

lint: lint-python lint-protos lint-ui

lint-python: install
	$(BIN)/ruff check services tests tools gateway bench
	$(BIN)/ruff format --check services tests tools gateway bench

# ESLint (ui/eslint.config.js: typescript-eslint, type-aware) over the UI and its browser tests;
# type-aware rules need the API types generated from the OpenAPI document first (ui's build).
lint-ui: ui/dist/index.html
	cd ui && npx eslint --max-warnings=0 .

.tools/node_modules/.bin/buf:
	npm install --silent --prefix .tools @bufbuild/buf@1

lint-protos: .tools/node_modules/.bin/buf install
	rm -rf .tools/proto-deps && mkdir -p .tools/proto-deps/google
	cp -r $(SITE_PACKAGES)/google/api $(SITE_PACKAGES)/google/rpc .tools/proto-deps/google/
	.tools/node_modules/.bin/buf lint

constraints: install
	{ echo "# Pinned versions of every Python package the project installs (pip list --format=freeze of a working .venv)."; \
	  echo "# Regenerate: make constraints"; $(BIN)/pip list --format=freeze --exclude-editable; } > constraints.txt

clean:
	rm -rf $(VENV) gen gateway/build .mlmesh .tools ui/node_modules ui/dist ui/src/api/schema.d.ts

# deploy/k8s offline: every overlay built with `kubectl kustomize` (also from a fresh clone) and
# validated (kubernetes-validate --strict, the RayCluster schema, the gateway's config rendered
# as its image does and loaded by envoy --mode validate, pod policy); Dockerfiles linted.
k8s-validate: protos
	$(PY) deploy/k8s/validate.py
	$(BIN)/hadolint services/Dockerfile gateway/Dockerfile
