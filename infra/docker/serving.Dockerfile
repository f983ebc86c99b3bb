# The serving image: MLServer with its MLflow runtime, serving one MLflow model folder over the Open
# Inference Protocol (V2) as KServe runs it (infra/k8s/serving/runtime.yaml):
#   docker build -f infra/docker/serving.Dockerfile -t ghcr.io/mnist-gan/mnist-gan-serving:0.1.0 .
#   docker run -p 127.0.0.1:8080:8080 -v "$PWD/model:/mnt/models:ro" ghcr.io/mnist-gan/mnist-gan-serving:0.1.0
# /mnt/models holds the model folder's contents (MLmodel at its top), as KServe's storage initializer
# leaves them. The model brings its own code (the `training` package it was logged with): the image
# carries none of the project's.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GIT_PYTHON_REFRESH=quiet

RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --create-home app
# The project's `serving` group as locked: MLServer, its MLflow runtime, MLflow, Keras and TensorFlow (CPU).
COPY requirements/serving.txt /tmp/requirements.txt
RUN python -m pip install --require-hashes --no-deps -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python -c "import mlserver_mlflow, tensorflow, keras" \
 && mkdir -p /mnt/models
COPY infra/serving_runtime.py /opt/mnist-gan-serving/serving_runtime.py

# The same settings as the ServingRuntime's; KServe names the model after the InferenceService.
ENV PYTHONPATH=/opt/mnist-gan-serving \
    MLSERVER_MODEL_IMPLEMENTATION=serving_runtime.GeneratorRuntime \
    MLSERVER_MODEL_URI=/mnt/models \
    MLSERVER_MODEL_NAME=mnist-gan \
    MLSERVER_HTTP_PORT=8080 \
    MLSERVER_GRPC_PORT=9000

USER 10001:10001
# MLServer keeps its metrics files in the working folder (.metrics): the user's own.
WORKDIR /home/app
EXPOSE 8080 9000
CMD ["mlserver", "start", "/mnt/models"]
