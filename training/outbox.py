"""Metrics and files on their way to an MLflow run, surviving an outage of the tracking server.

Each item is first appended to a journal (JSON lines, beside the run's checkpoints), then sent; what
cannot be sent stays in the journal and goes out with the next send that succeeds, in order. Requests
fail fast (no retries, a short timeout) so that a server that is down never stalls training, and a
rerun with --resume sends whatever an earlier process left in the journal.

An outage (no answer, a timeout, a 5xx) is waited out; an item that can never be sent (its file is
gone, MLflow refuses it with a 4xx that judges the item, a journal line that is not an item) is set
aside, with its reason, in a side file beside the journal, so that it never blocks the items after it.
A file's path is kept relative to the journal's folder, which --resume may reach from another working
folder or another mount.
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
# 4xx answers about the sender, the run or the moment (credentials, a deleted run, a timeout, a rate
# limit), not the item: every item would get them, so they are waited out like an outage.
NOT_ABOUT_THE_ITEM = {401, 403, 404, 408, 429, 499}


class TrackingOutage(RuntimeError):
    """The tracking server stayed unreachable; nothing is lost: the journal keeps what was not sent."""


class Unsendable(Exception):
    """The oldest pending item can never be sent; the message says why."""


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
        self.set_aside_file = journal.with_name(f"{journal.stem}.set-aside{journal.suffix}")
        self.client = client or mlflow.MlflowClient()
        self.unreachable_since: float | None = None
        self.set_aside_count = 0
        self.pending = self._read_journal()

    def metrics(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._queue([{"key": k, "value": float(v), "step": step, "timestamp": now}
                     for k, v in values.items()])

    def artifact(self, path: Path, artifact_path: str) -> None:
        self._queue([{"file": self._stored_path(path), "artifact_path": artifact_path}])

    def last_step(self, key: str) -> int:
        """The highest step of `key` already logged or waiting in the journal (-1 if none)."""
        queued = [item["step"] for item in self.pending if item.get("key") == key]
        with _fail_fast():
            logged = [m.step for m in self.client.get_metric_history(self.run_id, key)]
        return max(queued + logged, default=-1)

    def send(self) -> bool:
        """Try to send everything pending, oldest first; True when nothing is left. An item that can
        never be sent is set aside, and the items after it go on."""
        try:
            with _fail_fast():
                while self.pending:
                    try:
                        self._send_next()
                    except Unsendable as why:
                        self._set_aside([{"item": self.pending[0], "reason": str(why)}])
                        self.pending = self.pending[1:]
                        self._rewrite()
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
        done = self._send_file(item) if "file" in item else self._send_metrics()
        self.pending = self.pending[done:]
        self._rewrite()

    def _send_file(self, item: dict) -> int:
        path = self._local_file(item["file"])
        try:
            self.client.log_artifact(self.run_id, str(path), item["artifact_path"])
        except (OSError, MlflowException) as err:  # requests' errors are OSErrors
            if isinstance(err, OSError) and _names(err, path):  # the file cannot be read, not the store
                raise Unsendable(f"{path}: {err.strerror or err}") from None
            if not _judges_the_item(err):
                raise
            raise Unsendable(f"MLflow refused {path}: {_one_line(err)}") from None
        return 1

    def _send_metrics(self) -> int:
        """Send the metrics at the head of the queue as one batch; when MLflow refuses the batch, the
        first half, and so on down to the one item it refuses (Unsendable)."""
        batch = []
        for entry in self.pending[:BATCH]:
            if "file" in entry:
                break
            batch.append(Metric(entry["key"], entry["value"], entry["timestamp"], entry["step"]))
        while True:
            try:
                self.client.log_batch(self.run_id, metrics=batch)
                return len(batch)
            except MlflowException as err:
                if not _judges_the_item(err):
                    raise
                if len(batch) == 1:
                    raise Unsendable(f"MLflow refused it: {_one_line(err)}") from None
                batch = batch[:len(batch) // 2]

    def _stored_path(self, path: Path) -> str:
        """`path` relative to the journal's folder when it lies inside it, else absolute."""
        absolute = path.resolve()
        try:
            return str(absolute.relative_to(self.journal.parent.resolve()))
        except ValueError:
            return str(absolute)

    def _local_file(self, stored: str) -> Path:
        """The file a journal item names: beside the journal, or (journals written before paths were
        kept relative to it) from the working folder; Unsendable if neither exists."""
        candidates = [self.journal.parent / stored, Path(stored)]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise Unsendable(f"{stored}: no such file in {self.journal.parent} or {Path.cwd()}")
        return found

    def _read_journal(self) -> list[dict]:
        """The journal's items; a line that is not one is set aside (an unfinished last line, cut by a
        kill, is dropped: its step is logged again on resume). The journal is then rewritten to hold
        the items only, so that what is appended next starts on a line of its own."""
        if not self.journal.is_file():
            return []
        data = self.journal.read_bytes()
        lines = data.split(b"\n")
        unfinished = lines.pop()  # b"" when the journal ends with a newline
        items, unusable = [], []
        for line in lines:
            if line.strip():
                item, reason = _parse_item(line)
                if item is None:
                    unusable.append({"line": line.decode(errors="backslashreplace"), "reason": reason})
                else:
                    items.append(item)
        if unfinished.strip():
            item, _ = _parse_item(unfinished)
            items += [item] if item is not None else []
        if unusable:
            self._set_aside(unusable)
        if unfinished or len(items) != len(lines):  # anything but whole items: keep only those
            self.pending = items
            self._rewrite()
        return items

    def _set_aside(self, entries: list[dict]) -> None:
        """Keep `entries` (each with its reason) in the side file; say so on the first one."""
        with open(self.set_aside_file, "a") as out:
            out.writelines(json.dumps(entry) + "\n" for entry in entries)
            out.flush()
            os.fsync(out.fileno())
        if not self.set_aside_count:
            print(f"tracking: set aside {len(entries)} item(s) that can never be sent "
                  f"({entries[0]['reason']}); kept with the reason in {self.set_aside_file}, as any later "
                  "one will be; the rest is sent", flush=True)
        self.set_aside_count += len(entries)

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


def _parse_item(line: bytes) -> tuple[dict | None, str]:
    """A journal line as an item (a metric or a file), or None and why it is not one."""
    try:
        item = json.loads(line)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        return None, f"not a journal line ({type(err).__name__}: {str(err)[:200]})"
    if _is_metric(item) or _is_file(item):
        return item, ""
    return None, "not a metric or a file of the journal"


def _is_metric(item) -> bool:
    return (isinstance(item, dict) and isinstance(item.get("key"), str)
            and (type(item.get("value")) is float or _is_int64(item.get("value")))
            and _is_int64(item.get("step")) and _is_int64(item.get("timestamp")))


def _is_int64(value) -> bool:
    """An int the tracking store can hold (a bool is not one; a larger int overflows its column)."""
    return type(value) is int and -(2**63) <= value < 2**63


def _is_file(item) -> bool:
    return isinstance(item, dict) and all(isinstance(item.get(key), str) for key in ("file", "artifact_path"))


def _names(err: OSError, path: Path) -> bool:
    return isinstance(err.filename, str) and Path(err.filename).resolve() == path.resolve()


def _judges_the_item(err: Exception) -> bool:
    """Whether MLflow's answer is about the item itself (a 4xx such as INVALID_PARAMETER_VALUE), so that
    sending it again can never succeed; an outage (no answer, a timeout, a 5xx) is not."""
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
    elif isinstance(err, requests.HTTPError) and err.response is not None:
        status = err.response.status_code
    else:
        return False
    return 400 <= status < 500 and status not in NOT_ABOUT_THE_ITEM


def _one_line(err: Exception) -> str:
    if isinstance(err, MlflowException):
        from training.registry import one_line

        return one_line(err)
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
