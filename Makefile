# Two commands on a fresh machine with python3 and make: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# cpu,jax,dev here and in CI; on a CUDA machine: make run EXTRAS=gpu,jax-cuda,dev (after rm -rf .venv).
# Each set of extras installs from its hashed export of uv.lock, requirements/<extras joined by ->.txt.
EXTRAS ?= cpu,jax,dev
PARAMS ?=
comma := ,
BIN := $(abspath $(VENV))/bin
LOCKED := requirements/$(subst $(comma),-,$(EXTRAS)).txt
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install run test chaos check lint lock mlproject clean serve services images image push bench

install: $(STAMP)

# pip installs the lock's uv, which installs the rest (16 s where pip took 69 s, warm caches). Compiled
# at install, as pip does: where PYTHONDONTWRITEBYTECODE is set, every process would compile TensorFlow.
UV_PIP = $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python
$(STAMP): pyproject.toml $(LOCKED) requirements/uv.txt
	@echo "make install: $(VENV) from $(LOCKED), every package checked against its hash"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -qq --require-hashes -r requirements/uv.txt
	@$(UV_PIP) --require-hashes -r $(LOCKED)
	@$(UV_PIP) --no-deps --no-build-isolation -e .
	@touch $@

requirements/%.txt:
	@echo "EXTRAS=$(EXTRAS) has no locked export ($@): pick one of requirements/*.txt," \
		"or add it to infra/lockfiles.py and run make lock" >&2; exit 2

# The main job, tracked to $$MLFLOW_TRACKING_URI or MLflow's default sqlite:///mlflow.db. MLflow's own
# INFO lines (database set-up, the command it runs) show with MNIST_GAN_LOG_LEVEL=debug.
QUIET_MLFLOW = $(if $(filter debug DEBUG,$(MNIST_GAN_LOG_LEVEL)),,MLFLOW_LOGGING_LEVEL="$${MLFLOW_LOGGING_LEVEL:-WARNING}")
# `mlflow run` opens the run before the project's code starts, in experiment Default unless told: here it
# goes to mnist-gan (training/mlflow_env.py) unless MLFLOW_EXPERIMENT_NAME, MLFLOW_EXPERIMENT_ID or PARAMS
# name another.
EXPERIMENT_FLAG = $(if $(MLFLOW_EXPERIMENT_NAME)$(MLFLOW_EXPERIMENT_ID)$(findstring --experiment-,$(PARAMS)),,--experiment-name mnist-gan)
run: install
	PATH="$(BIN):$$PATH" $(QUIET_MLFLOW) $(BIN)/mlflow run . --env-manager local $(EXPERIMENT_FLAG) $(PARAMS)

# Every test, the container tests included: picks Docker or sets up podman, builds the images, runs pytest
# on TEST_WORKERS processes (tests that share a fixture run in one: --dist loadgroup). One more worker than
# the 2 cores CI has: each worker spends much of its time waiting on a server, a container or a process's
# start-up. In a new random order each run (pytest-randomly; it prints the seed, which
# PYTEST_ARGS=--randomly-seed=N repeats; PYTEST_ARGS="-p no:randomly" keeps the files' order). It ends
# with the 15 slowest tests: where the suite's time goes.
TEST_WORKERS ?= 3
PYTEST = PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -p randomly \
	--durations=15
WITH_IMAGES = . infra/containers/engine.sh && $(MAKE) --no-print-directory images && \
	MNIST_GAN_IMAGE=$(IMAGE) MNIST_GAN_SERVER_IMAGE=$(SERVER_IMAGE) \
	MNIST_GAN_SERVING_IMAGE=$(SERVING_IMAGE) MNIST_GAN_TEST_POSTGRES_IMAGE=$(TEST_POSTGRES_IMAGE)
test: install
	$(WITH_IMAGES) $(PYTEST) -m "not chaos" $(PYTEST_ARGS)

# The chaos tier (tests/test_chaos.py, 15 min on 2 cores; CI runs it after `make test`): the
# tracking stack's server, PostgreSQL and SeaweedFS killed during a job and a promotion, and two
# pipelines at once on one registry. One worker: the scenarios share one stack and take turns, jobs
# first (their versions are the promotions' challengers).
chaos: install
	$(WITH_IMAGES) PATH="$(BIN):$$PATH" $(BIN)/python -m pytest -q -n 1 -p no:randomly -m chaos $(PYTEST_ARGS)

# The fast tier, while you change the code: lint, then every test that starts no server, container or
# training, each within 60 s (a slow test without its mark fails here instead of slowing the tier).
check: lint
	$(PYTEST) -m "not slow and not containers" --timeout 60 $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check training components pipelines infra tests benchmarks
	$(BIN)/hadolint infra/docker/*Dockerfile infra/containers/*.Dockerfile

# Every CPU benchmark (about 105 min on 2 cores); rewrites the CPU section of docs/BENCHMARKS.md.
# BENCH_PARTS=throughput,data_parallel,quality,ema_decay,jobs,serving,promotion_noise picks some (serving
# needs jobs' model and the serving image, `make images`; promotion_noise takes about 13 min alone on the
# cores, 43 min measured while other work shared them).
BENCH_DATA ?= $(or $(MNIST_GAN_TEST_DATA),https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz)
BENCH_PARTS ?= throughput,data_parallel,quality,ema_decay,jobs,serving,promotion_noise
bench: install
	. infra/containers/engine.sh && PATH="$(BIN):$$PATH" $(BIN)/python -m benchmarks.run_all --data "$(BENCH_DATA)" --only $(BENCH_PARTS)

# Rewrite the MLproject from training/config.py after adding or changing a parameter.
mlproject: install
	$(BIN)/python -m infra.mlproject > MLproject

# Re-lock every extra on every platform after changing pyproject.toml (uv.lock), then rewrite what is
# derived from it: requirements/*.txt and conda.yaml.
lock: install
	$(BIN)/uv lock
	$(BIN)/python -m infra.lockfiles

clean:
	rm -rf $(VENV) mlflow.db mlruns mlartifacts checkpoints

# Serve the champion on http://127.0.0.1:5000 (POST /invocations, see docs/MLFLOW.md).
MODEL_URI ?= models:/mnist-gan-generator@champion
serve: install
	PATH="$(BIN):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL_URI)" --env-manager local -h 127.0.0.1 -p 5000

# A real MLflow server (sqlite) with artifacts in a real S3 store (SeaweedFS), on 127.0.0.1; Ctrl-C stops.
services: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m infra.local_stack

# Images: the CPU component image, its CUDA variant, the tracking server and the serving image
# (MLServer). Docker by default;
#   make image push REGISTRY=ghcr.io/org TAG=0.1.0
#   make images CONTAINER_ENGINE=podman PYTHON_IMAGE=localhost/python-base:3.11-bookworm BUILD_FLAGS=...
# (`. infra/containers/engine.sh` picks the engine and exports those settings for you.)
CONTAINER_ENGINE ?= docker
PYTHON_IMAGE ?= python:3.11.7-slim-bookworm
DEBIAN_IMAGE ?= debian:bookworm-slim
BUILD_FLAGS ?=
REGISTRY ?= ghcr.io/mnist-gan
TAG ?= 0.1.0
IMAGE := $(REGISTRY)/mnist-gan:$(TAG)
SERVER_IMAGE := $(REGISTRY)/mnist-gan-server:$(TAG)
SERVING_IMAGE := $(REGISTRY)/mnist-gan-serving:$(TAG)
TEST_POSTGRES_IMAGE := localhost/mnist-gan-test-postgres:15
BUILD = $(CONTAINER_ENGINE) build $(BUILD_FLAGS) --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)

# What the tests run: the CPU, tracking-server and serving images, and PostgreSQL from Debian's packages.
images:
	$(BUILD) -f infra/docker/Dockerfile --build-arg REQUIREMENTS=cpu -t $(IMAGE) .
	$(BUILD) -f infra/docker/server.Dockerfile -t $(SERVER_IMAGE) .
	$(BUILD) -f infra/docker/serving.Dockerfile -t $(SERVING_IMAGE) .
	$(CONTAINER_ENGINE) build $(BUILD_FLAGS) --build-arg DEBIAN_IMAGE=$(DEBIAN_IMAGE) \
		-f infra/docker/postgres.Dockerfile -t $(TEST_POSTGRES_IMAGE) .

image: images
	$(BUILD) -f infra/docker/Dockerfile --build-arg REQUIREMENTS=gpu-jax-cuda -t $(IMAGE)-cuda .

push: image
	$(CONTAINER_ENGINE) push $(IMAGE)
	$(CONTAINER_ENGINE) push $(IMAGE)-cuda
	$(CONTAINER_ENGINE) push $(SERVER_IMAGE)
	$(CONTAINER_ENGINE) push $(SERVING_IMAGE)
