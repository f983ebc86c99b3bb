"""Metrics and files on their way to an MLflow run, surviving an outage of the tracking server.

Each item is first appended to a journal (JSON lines, beside the run's checkpoints), then sent; what
cannot be sent stays in the journal and goes out with the next send that succeeds, in order. Requests
fail fast (no retries, a short timeout) so that a server that is down never stalls training, and a
rerun with --resume sends whatever an earlier process left in the journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import mlflow
import requests
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
BATCH = 1000  # MLflow's limit of metrics per log_batch


class TrackingOutage(RuntimeError):
    """The tracking server stayed unreachable; nothing is lost: the journal keeps what was not sent."""


@contextlib.contextmanager
def _fail_fast():
    saved = {key: os.environ.get(key) for key in FAIL_FAST}
    os.environ.update(FAIL_FAST)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Outbox:
    def __init__(self, run_id: str, journal: Path, client: mlflow.MlflowClient | None = None):
        self.run_id, self.journal = run_id, journal
        self.client = client or mlflow.MlflowClient()
        self.pending: list[dict] = []
        for line in journal.read_text().splitlines() if journal.is_file() else []:
            try:
                self.pending.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: nothing after it was written
        self.unreachable_since: float | None = None

    def metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._queue([{"key": k, "value": float(v), "step": step, "timestamp": now}
                     for k, v in values.items()])

    def artifact(self, path: Path, artifact_path: str) -> None:
        self._queue([{"file": str(path), "artifact_path": artifact_path}])

    def last_step(self, key: str) -> int:
        """The highest step of `key` already logged or waiting in the journal (-1 if none)."""
        queued = [item["step"] for item in self.pending if item.get("key") == key]
        with _fail_fast():
            logged = [m.step for m in self.client.get_metric_history(self.run_id, key)]
        return max(queued + logged, default=-1)

    def send(self) -> bool:
        """Try to send everything pending, oldest first; True when nothing is left."""
        try:
            with _fail_fast():
                while self.pending:
                    self._send_next()
        except (MlflowException, requests.RequestException, OSError) as err:  # keep the items, train on
            if self.unreachable_since is None:
                self.unreachable_since = time.monotonic()
                print(f"tracking: MLflow unreachable ({type(err).__name__}); training continues, "
                      f"{len(self.pending)} item(s) kept in {self.journal} until it is back", flush=True)
            return False
        if self.unreachable_since is not None:
            print("tracking: MLflow reachable again after "
                  f"{time.monotonic() - self.unreachable_since:.0f} s; "
                  "everything kept has been sent", flush=True)
            self.unreachable_since = None
        return True

    def close(self, wait_s: float, poll_s: float = 2.0) -> None:
        """Send what is left, retrying for up to wait_s seconds; raise TrackingOutage if it cannot."""
        deadline = time.monotonic() + wait_s
        while not self.send():
            if time.monotonic() >= deadline:
                raise TrackingOutage(
                    f"MLflow stayed unreachable for {wait_s:.0f} s after training; {len(self.pending)} "
                    f"item(s) are kept in {self.journal}: rerun with --resume to send them")
            time.sleep(poll_s)

    def _send_next(self) -> None:
        item = self.pending[0]
        if "file" in item:
            self.client.log_artifact(self.run_id, item["file"], item["artifact_path"])
            done = 1
        else:
            metrics = []
            for entry in self.pending[:BATCH]:
                if "file" in entry:
                    break
                metrics.append(Metric(entry["key"], entry["value"], entry["timestamp"], entry["step"]))
            self.client.log_batch(self.run_id, metrics=metrics)
            done = len(metrics)
        self.pending = self.pending[done:]
        self._rewrite()

    def _queue(self, items: list[dict]) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as out:
            out.writelines(json.dumps(item) + "\n" for item in items)
        self.pending += items
        self.send()

    def _rewrite(self) -> None:
        partial = self.journal.with_suffix(".partial")
        partial.write_text("".join(json.dumps(item) + "\n" for item in self.pending))
        partial.replace(self.journal)
