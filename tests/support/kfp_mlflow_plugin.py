"""Kubeflow Pipelines' MLflow plugin, played as the KFP 2.17.0 backend plays it, against a real MLflow server:
no KFP backend runs here. What each part does, from kubeflow/pipelines at tag 2.17.0:

- the API server (apiserver/plugins/mlflow): at run creation, the experiment the run's
  `plugins_input.mlflow.experiment_name` names (created if missing, default "KFP-Default") and a parent run
  named after the KFP run, tagged `kfp.pipeline_run_id` and `kfp.pipeline_run_url`; on a retry, the
  parent and every FAILED or KILLED nested run back to RUNNING;
- the driver (v2/driver, v2/common/plugins/mlflow): one nested run per task, named after the task and
  tagged only `mlflow.parentRunId` (a condition's DAG run is ended at once, its tasks nest under it), and,
  with the admin setting `injectUserEnvVars`, MLFLOW_RUN_ID, MLFLOW_TRACKING_URI and
  MLFLOW_EXPERIMENT_ID on the task's container, beside KFP_MLFLOW_CONFIG, which every task sees;
- the launcher (v2/component/launcher_v2.go): after the task, one log-batch into the task's run of its
  input parameters, each value as Go's encoding/json writes it, and of its Metrics outputs at step 0,
  timestamp 0; then the run ends FINISHED or FAILED. A refused batch is only logged by KFP: here it fails
  the test, since it means our records collided with KFP's.
"""

from __future__ import annotations

import decimal
import inspect
import json
import subprocess
import sys
import typing
import uuid
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

# Runs one component's Python function with its arguments (artifacts as local paths), as a task's
# container does; prints the return value and the metrics it logged as the last line, JSON.
TASK = """
import json, sys, typing
from kfp import dsl
from components import gan

name, arguments, artifacts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
function = getattr(gan, name).python_func
hints = typing.get_type_hints(function, include_extras=True)
for key, path in artifacts.items():
    arguments[key] = typing.get_args(hints[key])[0](uri=path)
result = function(**arguments)
metrics = {k: v for key in artifacts for k, v in arguments[key].metadata.items()
           if isinstance(arguments[key], dsl.Metrics)}
print(json.dumps({"result": result if not isinstance(result, tuple) else list(result), "metrics": metrics}))
"""


def task_command(task: str, arguments: dict, artifacts: dict[str, Path]) -> list[str]:
    """The process that runs `task`'s component function with `arguments` and local `artifacts`."""
    return [sys.executable, "-c", TASK, task.replace("-", "_"), json.dumps(arguments),
            json.dumps({name: str(path) for name, path in artifacts.items()})]


def go_json(value) -> str:
    """A parameter value as Go's encoding/json writes it (strconv 'f' formatting between 1e-6 and 1e21,
    exponent without leading zeros outside), written independently of the project's own spelling."""
    if isinstance(value, float):
        if value == 0 or 1e-6 <= abs(value) < 1e21:
            text = format(decimal.Decimal(repr(value)), "f")
            return text.rstrip("0").rstrip(".") if "." in text else text
        mantissa, exponent = repr(value).split("e")
        return f"{mantissa}e{exponent[0]}{int(exponent[1:])}"
    return json.dumps(value, separators=(",", ":"))


def _is_artifact(hint) -> bool:
    return typing.get_origin(hint) is typing.Annotated


class Plugin:
    """One KFP run with the MLflow plugin on: its parent run, its tasks' runs, their environments."""

    def __init__(self, tracking_uri: str, experiment_name: str = "KFP-Default", inject: bool = True,
                 workspace: str | None = None, display_name: str = "mnist-gan 2026-12-05 12:00:00"):
        """`workspace`: the run's namespace, when the plugin's `workspacesEnabled` is on (this process's
        clients must then be in it too: MLFLOW_WORKSPACE)."""
        self.uri, self.inject, self.workspace = tracking_uri, inject, workspace
        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        self.experiment_id = (experiment.experiment_id if experiment else self.client.create_experiment(
            experiment_name, tags={"mlflow.note.content": "Created by Kubeflow Pipelines"}))
        self.kfp_run_id = str(uuid.uuid4())
        self.parent_run_id = self.client.create_run(self.experiment_id, run_name=display_name, tags={
            "kfp.pipeline_run_id": self.kfp_run_id,
            "kfp.pipeline_run_url": f"http://kfp.example.com/#/runs/details/{self.kfp_run_id}"}).info.run_id
        self.batches: list[tuple[str, dict[str, str]]] = []  # (task run, params) of each launcher batch

    def nested_run(self, task: str, parent_run_id: str | None = None) -> str:
        """The driver's run for `task`."""
        return self.client.create_run(self.experiment_id, run_name=task, tags={
            "mlflow.parentRunId": parent_run_id or self.parent_run_id}).info.run_id

    def dag_run(self, name: str) -> str:
        """The driver's run for a condition's DAG, ended as soon as its driver returns."""
        run_id = self.nested_run(name)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def environment(self, task_run_id: str) -> dict[str, str]:
        workspace = {"workspacesEnabled": True, "workspace": self.workspace} if self.workspace else {}
        config = {"endpoint": self.uri, **workspace, "parentRunId": self.parent_run_id,
                  "experimentId": self.experiment_id, "authType": "none", "timeout": "30s",
                  "injectUserEnvVars": self.inject}
        env = {"KFP_MLFLOW_CONFIG": json.dumps(config, separators=(",", ":"))}
        if self.inject:
            env |= {"MLFLOW_RUN_ID": task_run_id, "MLFLOW_TRACKING_URI": self.uri,
                    "MLFLOW_EXPERIMENT_ID": self.experiment_id}
            if self.workspace:
                env["MLFLOW_WORKSPACE"] = self.workspace
        return env

    def run_task(self, task: str, arguments: dict, artifacts: dict[str, Path], env: dict[str, str],
                 cwd: Path, parent_run_id: str | None = None, task_run_id: str | None = None,
                 timeout: int = 600) -> tuple[str, typing.Any]:
        """Driver, task and launcher: the task's component function in a process of its own with the
        plugin's environment; returns (the task's run, what the function returned)."""
        from components import gan

        task_run_id = task_run_id or self.nested_run(task, parent_run_id)
        function = getattr(gan, task.replace("-", "_")).python_func
        done = subprocess.run(task_command(task, arguments, artifacts), cwd=cwd,
                              env={**env, **self.environment(task_run_id)}, capture_output=True, text=True,
                              timeout=timeout, check=False)
        finished = done.returncode == 0
        output = json.loads(done.stdout.strip().splitlines()[-1]) if finished else {"metrics": {}}
        self.launcher_end(task_run_id, function, arguments, output["metrics"], finished)
        assert finished, f"{task} failed:\n{done.stderr[-4000:]}"
        return task_run_id, output["result"]

    def launcher_end(self, task_run_id: str, function, arguments: dict, metrics: dict[str, float],
                     finished: bool) -> None:
        """The launcher's one batch (input parameters, defaults included, and Metrics at step 0), then
        the end of the run."""
        hints = typing.get_type_hints(function, include_extras=True)
        signature = inspect.signature(function).parameters.items()
        inputs = {name: arguments.get(name, p.default) for name, p in signature
                  if not _is_artifact(hints[name]) and (name in arguments or p.default is not p.empty)}
        params = {name: go_json(value) for name, value in inputs.items()}
        self.client.log_batch(task_run_id, params=[Param(k, v) for k, v in params.items()],
                              metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
        self.batches.append((task_run_id, params))
        self.client.set_terminated(task_run_id, "FINISHED" if finished else "FAILED")

    def end(self, status: str = "FINISHED") -> None:
        """The API server at the end of the KFP run: the parent and the runs left open take its status."""
        for run in self.client.search_runs([self.experiment_id]):
            if run.info.status == "RUNNING":
                self.client.set_terminated(run.info.run_id, status)

    def retry(self) -> None:
        """The API server's part of a KFP retry: the parent and its FAILED or KILLED runs RUNNING again."""
        self.client.update_run(self.parent_run_id, status="RUNNING")
        for run in self.client.search_runs([self.experiment_id],
                                           f"tags.mlflow.parentRunId = '{self.parent_run_id}'"):
            if run.info.status in ("FAILED", "KILLED"):
                self.client.update_run(run.info.run_id, status="RUNNING")
