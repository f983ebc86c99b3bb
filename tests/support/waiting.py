"""Waiting on what another process does: a condition polled until it holds."""

from __future__ import annotations

import subprocess
import time


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None,
             every_s: float = 0.1):
    """`condition()`'s first truthy value within `timeout` s; AssertionError naming `what` at the deadline,
    or as soon as `process` (the one expected to make it true) has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {what}")
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")
