"""Kubeflow Pipelines' MLflow plugin (KFP 2.17 and later), as a pipeline task sees it.

When a cluster admin turns it on, KFP opens the MLflow runs itself: its API server a parent run per
pipeline run (in the experiment the run's `plugins_input` names), its driver one nested run per task.
Every task container gets `KFP_MLFLOW_CONFIG` (JSON, `parentRunId` among its keys); with the admin
setting `injectUserEnvVars` also `MLFLOW_RUN_ID` (the task's own run), `MLFLOW_EXPERIMENT_ID` and
`MLFLOW_TRACKING_URI`. After the task, KFP's launcher logs the task's input parameters (JSON-spelled)
and its `Metrics` outputs (at step 0) into the task's run, in one batch, and ends the run.

The pipeline then keeps one MLflow tree, KFP's: its parent run is the pipeline's, and the first run a
task opens under it is the task's own run when KFP made one (later runs of that task nest under it).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import numpy

CONFIG_VARIABLE = "KFP_MLFLOW_CONFIG"
RUN_ID_VARIABLE = "MLFLOW_RUN_ID"


@dataclass(frozen=True)
class Plugin:
    parent_run_id: str  # KFP's run for the whole pipeline run
    task_run_id: str | None  # KFP's nested run for this task, when the plugin tells the task


@functools.cache
def active() -> Plugin | None:
    """The plugin's runs for this task, or None when KFP's MLflow plugin is off; read once per process,
    since MLFLOW_RUN_ID leaves the environment when a run is re-opened (MLflow and we remove it)."""
    raw = os.environ.get(CONFIG_VARIABLE)
    if not raw:
        return None
    try:
        parent = json.loads(raw)["parentRunId"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{CONFIG_VARIABLE} is not the JSON KFP's MLflow plugin writes: {raw[:200]}"
                         ) from None
    return Plugin(parent, os.environ.get(RUN_ID_VARIABLE) or None)


_claimed: dict[str, str] = {}  # KFP parent run id -> the task run this process already opened


def task_run(parent_run_id: str) -> tuple[str | None, str]:
    """Where a run this task opens under `parent_run_id` goes: (the run to re-open, the parent to nest
    under). The first such run is KFP's run for the task, re-opened; later ones nest under it. Without
    the plugin, or for another parent: (None, parent_run_id)."""
    plugin = active()
    if plugin is None or plugin.parent_run_id != parent_run_id:
        return None, parent_run_id
    if parent_run_id in _claimed:
        return None, _claimed[parent_run_id]
    if plugin.task_run_id is None:
        return None, parent_run_id
    _claimed[parent_run_id] = plugin.task_run_id
    return plugin.task_run_id, parent_run_id


def is_task_run(run_id: str) -> bool:
    """Whether `run_id` is KFP's run for this task, into which its launcher logs the task's inputs."""
    return run_id in _claimed.values()


def task_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """A task's `Metrics` output: KFP's launcher logs it into the task's run at step 0, so its names
    (`final/fid`) are never those of a metric the task logs itself, whose history it would join."""
    return {f"final/{name}": value for name, value in metrics.items()}


def launcher_spelling(value) -> str:
    """A parameter's value as KFP's launcher logs it (Go's encoding/json of the value): strings quoted,
    booleans lower case, floats in the shortest form (0.0 is "0", 1e-07 is "1e-7"). Our param of the
    same name must be spelled so, since MLflow refuses to change a param's value."""
    if isinstance(value, bool) or value is None or isinstance(value, str | list | dict):
        return json.dumps(value, separators=(",", ":"))
    number = float(value)
    if number == 0 or 1e-6 <= abs(number) < 1e21:
        return numpy.format_float_positional(number, trim="-")
    mantissa, exponent = repr(number).split("e")
    return f"{mantissa}e{exponent[0]}{exponent[1:].lstrip('0')}"
