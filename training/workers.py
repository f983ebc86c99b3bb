"""Run a function over several argument tuples, each call in a fresh process, `workers` at a time.

A fresh process per call gives each trial of a sweep what a standalone run has (its own Keras state,
its own device memory) and confines a crash: a process killed by the kernel (out of memory) becomes
`Died` for its call while the others carry on. Each call's console output goes to its own log file.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Died:
    """The process of a call ended without a result."""

    exitcode: int | None

    def __str__(self) -> str:
        how = f"was killed by signal {-self.exitcode}" if self.exitcode and self.exitcode < 0 else (
            f"exited with code {self.exitcode}")
        return f"process {how} before returning (out of memory?)"


def run_each(function: Callable, calls: list[tuple], workers: int, log_dir: Path,
             on_done: Callable[[int, Any], None] = lambda index, result: None) -> list[Any]:
    """function(*args) for each args in `calls`, results (or Died) in the order of `calls`. Call i's
    output goes to log_dir/<i>.log; on_done(i, result) runs here as each call ends."""
    context = multiprocessing.get_context("spawn")  # no forked copies of TensorFlow or MLflow state
    log_dir.mkdir(parents=True, exist_ok=True)
    waiting, running, results = list(enumerate(calls)), {}, {}
    while waiting or running:
        while waiting and len(running) < workers:
            index, args = waiting.pop(0)
            result_file = log_dir / f".{index}.result"
            process = context.Process(target=_call,
                                      args=(function, args, result_file, log_dir / f"{index}.log"))
            process.start()
            running[process.sentinel] = (index, process, result_file)
        for sentinel in wait(list(running)):
            index, process, result_file = running.pop(sentinel)
            process.join()
            results[index] = _result(process, result_file)
            on_done(index, results[index])
    return [results[index] for index in range(len(calls))]


def _call(function: Callable, args: tuple, result_file: Path, log_file: Path) -> None:
    with open(log_file, "ab", buffering=0) as log:
        os.dup2(log.fileno(), sys.stdout.fileno())
        os.dup2(log.fileno(), sys.stderr.fileno())
    result = function(*args)
    partial = result_file.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(result))
    partial.replace(result_file)


def _result(process, result_file: Path) -> Any:
    if process.exitcode != 0 or not result_file.is_file():
        return Died(process.exitcode)
    result = pickle.loads(result_file.read_bytes())
    result_file.unlink()
    return result
