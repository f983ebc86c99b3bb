"""The project's images, run with the container engine `make test` picked (Docker, or podman through its
Docker-compatible socket): single containers, and the tracking stack as a cluster runs it, MLflow (the
tracking-server image, basic auth) on PostgreSQL with artifacts in SeaweedFS S3, each reached by a host
name. Every container joins the host's network and binds 127.0.0.1 only; each is removed by its id."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import requests

from infra.local_stack import free_port, s3_server

ENGINE = os.environ.get("CONTAINER_ENGINE", "docker")
IMAGE = os.environ.get("MNIST_GAN_IMAGE", "ghcr.io/mnist-gan/mnist-gan:0.1.0")
SERVER_IMAGE = os.environ.get("MNIST_GAN_SERVER_IMAGE", "ghcr.io/mnist-gan/mnist-gan-server:0.1.0")
POSTGRES_IMAGE = os.environ.get("MNIST_GAN_TEST_POSTGRES_IMAGE", "localhost/mnist-gan-test-postgres:15")
BUCKET = "mnist-gan"
HOSTS = {"mlflow": "127.0.0.1", "postgres": "127.0.0.1", "s3": "127.0.0.1"}


def engine(*args: str, timeout: float = 300, env: dict | None = None, check: bool = True):
    """`docker ARGS` (or podman); env values reach the container through `-e NAME` without a value, so
    no secret is on a command line."""
    if shutil.which(ENGINE) is None:
        raise RuntimeError(f"no container engine {ENGINE!r}: run the tests with `make test`, "
                           "which sets one up")
    result = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout, check=False,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise RuntimeError(f"{ENGINE} {' '.join(args[:3])} ... exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def run_args(env: dict | None = None, volumes: dict | None = None) -> list[str]:
    args = ["--network", "host", *[f"--add-host={name}:{ip}" for name, ip in HOSTS.items()]]
    args += [item for name in (env or {}) for item in ("-e", name)]
    args += [item for source, target in (volumes or {}).items() for item in ("-v", f"{source}:{target}")]
    return args


@contextlib.contextmanager
def container(image: str, *command: str, env: dict | None = None, volumes: dict | None = None):
    """A detached container from `image`; yields its id, and always removes it."""
    container_id = engine("run", "-d", *run_args(env, volumes), image, *command, env=env).stdout.strip()
    try:
        yield container_id
    finally:
        engine("rm", "-f", container_id, check=False)


def logs(container_id: str) -> str:
    result = engine("logs", container_id, check=False)
    return result.stdout + result.stderr


def wait_for(ready, what: str, container_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, RuntimeError, urllib.error.URLError):
            if ready():
                return
        if engine("inspect", "-f", "{{.State.Running}}", container_id, check=False).stdout.strip() != "true":
            raise RuntimeError(f"{what} stopped:\n{logs(container_id)[-3000:]}")
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer within {timeout}s:\n{logs(container_id)[-3000:]}")


@dataclass
class Stack:
    host_uri: str        # http://127.0.0.1:PORT, for the test's own checks
    service_uri: str     # http://mlflow:PORT, what the pipeline's containers use
    admin: tuple[str, str]
    server: str          # container ids
    postgres: str
    postgres_port: int
    s3_env: dict

    def create_user(self, username: str, password: str | None = None) -> tuple[str, str]:
        password = password or secrets.token_urlsafe(16)
        response = requests.post(f"{self.host_uri}/api/2.0/mlflow/users/create", auth=self.admin,
                                 json={"username": username, "password": password}, timeout=30)
        response.raise_for_status()
        return username, password

    def signed_in(self, monkeypatch, user: tuple[str, str] | None = None):
        """A client of the tracking server as `user` (name, password; the admin by default), which MLflow
        reads from the env, its files through the server as every mnist-gan command moves them (the
        bucket's address is the server's, not this machine's)."""
        import mlflow

        from training import mlflow_env

        name, password = user or self.admin
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        for variable, value in mlflow_env.THROUGH_THE_SERVER.items():
            monkeypatch.setenv(variable, value)
        return mlflow.MlflowClient(self.host_uri)

    def dump(self) -> str:
        """Everything the server keeps in PostgreSQL (runs, registry, users), as SQL."""
        return engine("exec", self.postgres, "pg_dump", "-h", "/tmp", "-p", str(self.postgres_port), "-U",
                      "mlflow", "mlflow").stdout

    def sql(self, query: str) -> list[list[str]]:
        out = engine("exec", self.postgres, "psql", "-h", "/tmp", "-p", str(self.postgres_port),
                     "-U", "mlflow", "-d", "mlflow", "-At", "-F", "\t", "-c", query).stdout
        return [line.split("\t") for line in out.splitlines() if line]


@contextlib.contextmanager
def tracking_stack(directory: Path):
    """SeaweedFS (host process on 127.0.0.1, name `s3`), PostgreSQL (name `postgres`) and the
    tracking-server image (name `mlflow`) with basic auth and the bucket as its artifact store."""
    with s3_server(directory / "s3", BUCKET) as s3_env:
        s3_port = s3_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1]
        db_password, pg_port = secrets.token_urlsafe(12), free_port()
        db_env = {"POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": db_password, "POSTGRES_DB": "mlflow",
                  "POSTGRES_LISTEN": "127.0.0.1", "POSTGRES_PORT": str(pg_port)}
        with container(POSTGRES_IMAGE, env=db_env) as postgres:
            wait_for(lambda: engine("exec", postgres, "pg_isready", "-h", "127.0.0.1", "-p", str(pg_port),
                                    check=False).returncode == 0, "postgres", postgres)
            port, admin = free_port(), ("admin", secrets.token_urlsafe(16))
            server_env = {
                "MLFLOW_BACKEND_STORE_URI": f"postgresql://mlflow:{db_password}@postgres:{pg_port}/mlflow",
                "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{BUCKET}/mlflow",
                "MLFLOW_S3_ENDPOINT_URL": f"http://s3:{s3_port}",
                "AWS_ACCESS_KEY_ID": s3_env["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": s3_env["AWS_SECRET_ACCESS_KEY"],
                "MLFLOW_SERVER_ALLOWED_HOSTS": f"mlflow:{port},127.0.0.1:{port}",
                "MLFLOW_AUTH_ADMIN_USERNAME": admin[0], "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1"}
            with container(SERVER_IMAGE, env=server_env) as server:
                host_uri = f"http://127.0.0.1:{port}"
                wait_for(lambda: urllib.request.urlopen(f"{host_uri}/health", timeout=3).status == 200,
                         "the tracking server", server, timeout=180)
                yield Stack(host_uri, f"http://mlflow:{port}", admin, server, postgres, pg_port, s3_env)
