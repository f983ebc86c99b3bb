# Two commands on a fresh machine with python3 and make: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# cpu,jax,dev here and in CI; on a CUDA machine: make run EXTRAS=gpu,jax,dev (after rm -rf .venv)
EXTRAS ?= cpu,jax,dev
PARAMS ?=
comma := ,
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install run test lint lock clean serve

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[$(EXTRAS)]"
	touch $@

# The main job, tracked to $$MLFLOW_TRACKING_URI or MLflow's default sqlite:///mlflow.db.
run: install
	PATH="$(BIN):$$PATH" $(BIN)/mlflow run . --env-manager local $(PARAMS)

test: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check training tests

# Re-pin every transitive dependency after changing pyproject.toml.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > requirements.lock

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts checkpoints

# Serve the champion on http://127.0.0.1:5000 (POST /invocations, see README).
MODEL_URI ?= models:/mnist-gan-generator@champion
serve: install
	PATH="$(BIN):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL_URI)" --env-manager local -h 127.0.0.1 -p 5000
