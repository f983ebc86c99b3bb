# The tracking-server image: MLflow (basic auth), the PostgreSQL driver (psycopg 3, SQLAlchemy's default
# for postgresql:// URIs) and boto3, nothing else.
#   docker build -f infra/docker/server.Dockerfile -t ghcr.io/mnist-gan/mnist-gan-server:0.1.0 .
# Configured by environment variables only: see infra/tracking_server.py.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GIT_PYTHON_REFRESH=quiet

RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --create-home app
# The project's `server` extra as locked: MLflow, psycopg, boto3 and the rest of the main dependencies.
COPY requirements/server.txt /tmp/requirements.txt
RUN python -m pip install --require-hashes --no-deps -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python -c "import mlflow.server.auth, psycopg, boto3"
COPY --chmod=755 infra/tracking_server.py /usr/local/bin/mnist-gan-tracking-server

USER 10001:10001
WORKDIR /home/app
EXPOSE 5000
ENTRYPOINT ["mnist-gan-tracking-server"]
