"""Faults for the chaos tier: one part of the container tracking stack (tests/support/container_stack.py)
killed with SIGKILL and brought back after a pause, as a node's failure and the restart that follows it
do on a cluster. The server and PostgreSQL are containers, started again as they were (PostgreSQL's
data lives in its container, as on its volume); SeaweedFS is a host process, started again with the
same command line, folder and ports."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import psutil
import requests

from tests.support.container_stack import BUCKET, Stack, engine

PARTS = ("mlflow-server", "postgresql", "seaweedfs")
OUTAGE_S = 30


class Outages:
    """Kills and restarts the parts of one stack; stops the SeaweedFS processes it started."""

    def __init__(self, stack: Stack, s3_directory: Path):
        self.stack, self.s3_directory, self.respawned = stack, s3_directory, []

    def kill(self, part: str) -> None:
        if part == "mlflow-server":
            engine("kill", "-s", "KILL", self.stack.server)
        elif part == "postgresql":
            engine("kill", "-s", "KILL", self.stack.postgres)
        else:
            self._weed().kill()

    def restart(self, part: str) -> None:
        if part == "seaweedfs":
            self._start_weed()
        else:
            engine("start", self.stack.server if part == "mlflow-server" else self.stack.postgres)
        self._wait_until_answering(part)

    @contextlib.contextmanager
    def down(self, part: str, seconds: float = OUTAGE_S):
        """`part` killed on entry; restarted `seconds` after the kill (or at exit, if later)."""
        self.kill(part)
        killed_at = time.monotonic()
        try:
            yield
        finally:
            time.sleep(max(0.0, seconds - (time.monotonic() - killed_at)))
            self.restart(part)

    def close(self) -> None:
        for process in self.respawned:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()

    def _weed(self) -> psutil.Process:
        marker = f"-dir={self.s3_directory}"
        for process in psutil.process_iter(["cmdline"]):
            if marker in (process.info["cmdline"] or []) and process.is_running():
                self._weed_command = (process.cmdline(), process.environ(), process.cwd())
                return process
        raise RuntimeError(f"no SeaweedFS process serves {self.s3_directory}")

    def _start_weed(self) -> None:
        command, environment, cwd = self._weed_command
        with open(self.s3_directory / "weed-restarted.log", "a") as log:
            self.respawned.append(subprocess.Popen(command, env=environment, cwd=cwd, stdout=log,
                                                   stderr=subprocess.STDOUT, start_new_session=True))

    def _wait_until_answering(self, part: str, timeout: float = 180) -> None:
        import boto3

        s3 = self.stack.s3_env
        checks = {
            "mlflow-server": lambda: requests.get(f"{self.stack.host_uri}/health", timeout=3).ok,
            "postgresql": lambda: engine("exec", self.stack.postgres, "pg_isready", "-h", "127.0.0.1", "-p",
                                         str(self.stack.postgres_port), check=False).returncode == 0,
            "seaweedfs": lambda: boto3.client(
                "s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], region_name=s3["AWS_DEFAULT_REGION"],
            ).list_objects_v2(Bucket=BUCKET, MaxKeys=1) is not None,
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if checks[part]():
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{part} did not answer within {timeout} s of its restart")
