"""One process trains a checkpoint folder at a time: an exclusive `flock` on `<folder>/training.lock`,
held for the training job's life.

`--resume` continues whatever run is newest under checkpoint_dir; without the lock, a second process
would attach to a run another one is still training, and both would write its checkpoints and log its
steps. The kernel (or the NFS server, for a volume) drops the lock when its process ends, killed or not,
so none is ever left behind; the file stays, saying who held it last (pid, host, run id), which is what
a refused process names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from training.config import ConfigError

LOCK_FILE = "training.lock"


class FolderBusy(ConfigError):
    """Another live process trains this checkpoint folder."""


@contextlib.contextmanager
def hold(folder: Path, run_id: str | None = None) -> Iterator[None]:
    """Train `folder` (created if absent) alone for the body of the `with`; FolderBusy, at once, naming
    the holder, if another process does."""
    with _locked(folder) as lock:
        lock.seek(0)
        lock.truncate()
        lock.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id}))
        lock.flush()
        yield


def check_free(folder: Path) -> None:
    """FolderBusy if another process trains `folder` now (a check before anything is tracked; `hold`
    is what keeps it)."""
    if (folder / LOCK_FILE).exists():
        with _locked(folder):
            pass


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[IO[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    # Opened without truncating: the holder's line must survive a refused process's open.
    with os.fdopen(os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666), "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"checkpoint folder {folder} is being trained by another process "
                             f"({_holder(lock)}); wait for it to end, or give another checkpoint_dir"
                             ) from None
        yield lock  # closing the file releases the lock


def _holder(lock: IO[str]) -> str:
    """"pid 123 on host-a, run <id>" from what the holder wrote, as far as it says."""
    try:
        holder = json.loads(lock.read())
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        return "which has not written its pid yet"
    said = f"pid {holder.get('pid')} on {holder.get('host')}"
    return said + (f", run {holder['run_id']}" if holder.get("run_id") else "")
