#!/usr/bin/env python3
"""Entry point of the tracking-server image: MLflow with its basic-auth app, runs, registry and users in
the backend store (PostgreSQL), artifacts proxied to S3. Without arguments it serves; with the one
argument `upgrade-db` it only brings the backend store's schema up to this MLflow (`mlflow db upgrade`)
and exits, which the Kubernetes manifest runs as an init container, so that an MLflow upgrade migrates
the database before the new server starts. A Kubernetes secret and the manifest's env configure it:

  MLFLOW_BACKEND_STORE_URI        postgresql://USER:PASSWORD@HOST:5432/DB (also holds the users)
  MLFLOW_ARTIFACTS_DESTINATION    s3://BUCKET[/PREFIX] (the bucket is created when missing)
  MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
  MLFLOW_SERVER_ALLOWED_HOSTS     the Host headers clients send, e.g. mlflow.mnist-gan.svc:5000
  MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY
  MLFLOW_AUTH_DEFAULT_PERMISSION  what a signed-in user may do where nobody granted more (default READ)
  MLFLOW_ENABLE_WORKSPACES        true: workspaces (one per team or Kubeflow namespace; clients pick one
                                  with MLFLOW_WORKSPACE); a user who is not admin creates runs and models
                                  in a workspace only through a role granting USE or MANAGE on it
  MLFLOW_HOST (0.0.0.0), MLFLOW_PORT (5000), MLFLOW_WORKERS (2)

It imports only the standard library, MLflow's dependencies and boto3: the image has no TensorFlow.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

REQUIRED = ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_SERVER_ALLOWED_HOSTS",
            "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


def fail(message: str) -> None:
    print(f"tracking server: {message}", file=sys.stderr)
    sys.exit(2)


def ensure_bucket(destination: str) -> None:
    """Create the artifact bucket if it does not exist (the first start of a new store)."""
    import boto3
    import botocore.exceptions

    bucket = urlparse(destination).netloc
    s3 = boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            fail(f"S3 refused access to bucket {bucket!r} at {s3.meta.endpoint_url}: {err}")
        s3.create_bucket(Bucket=bucket)
        print(f"tracking server: created bucket {bucket!r}", file=sys.stderr)
    except botocore.exceptions.BotoCoreError as err:
        fail(f"S3 at {s3.meta.endpoint_url} is unreachable: {err}")


def auth_config(backend_store_uri: str) -> Path:
    """MLflow's auth settings as the ini file it reads; users live in the backend store too. The admin
    comes from MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD, which MLflow reads itself."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-auth-"))
    path = folder / "basic_auth.ini"
    path.touch(mode=0o600)
    path.write_text(
        "[mlflow]\n"
        f"default_permission = {os.environ.get('MLFLOW_AUTH_DEFAULT_PERMISSION', 'READ')}\n"
        f"database_uri = {backend_store_uri}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return path


def upgrade_db() -> None:
    """`mlflow db upgrade` of MLFLOW_BACKEND_STORE_URI: a no-op on an up-to-date schema, creates a new one."""
    backend_store_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not backend_store_uri:
        fail("set MLFLOW_BACKEND_STORE_URI (the database to upgrade)")
    os.execvp("mlflow", ["mlflow", "db", "upgrade", backend_store_uri])


def main(args: list[str]) -> None:
    if args == ["upgrade-db"]:
        upgrade_db()
    if args:
        fail(f"unknown arguments {' '.join(args)}: run without arguments to serve, or with upgrade-db")
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        fail(f"set {', '.join(missing)} (see the image's documentation in infra/tracking_server.py)")
    backend_store_uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    destination = os.environ["MLFLOW_ARTIFACTS_DESTINATION"]
    if destination.startswith("s3://"):
        ensure_bucket(destination)
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(backend_store_uri))
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    workspaces = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "false").lower()
    if workspaces not in ("true", "false"):
        fail(f"MLFLOW_ENABLE_WORKSPACES must be true or false (got {workspaces!r})")
    os.execvp("mlflow", [
        "mlflow", "server", "--app-name", "basic-auth",
        "--host", os.environ.get("MLFLOW_HOST", "0.0.0.0"), "--port", os.environ.get("MLFLOW_PORT", "5000"),
        "--workers", os.environ.get("MLFLOW_WORKERS", "2"),
        "--backend-store-uri", backend_store_uri, "--artifacts-destination", destination,
        *(["--enable-workspaces"] if workspaces == "true" else [])])


if __name__ == "__main__":
    main(sys.argv[1:])
