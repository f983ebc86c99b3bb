"""Where this process tracks: the experiment (its name, and the one place it is chosen and created), URIs
fit to print, and links into MLflow's UI.

Light on purpose (MLflow is imported only inside functions), so the pre-flight checks and the tracking
code share it without importing each other.
"""

from __future__ import annotations

import os
import urllib.parse

from training.config import ConfigError
from training.redaction import redacted

DEFAULT_EXPERIMENT = "mnist-gan"  # every entry point's, `mlflow run` told so by the commands we document
EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
# What MLflow 3 calls an experiment of training runs, as opposed to GenAI traces (its UI's ExperimentKind).
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
# MLflow 3.17's UI shows an experiment and its runs in the view its GenAI / Model training switch holds
# (GenAI until a person flips it), whatever the experiment's kind; a link carrying this opens the training
# view: the experiment on its runs, a run's page with its description first.
TRAINING_VIEW = "workflowType=machine_learning"
MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves unless told otherwise
# MLflow 3.17's client asks a tracking server that serves artifacts from S3 for presigned URLs and then
# reads and writes the bucket itself, at the address the server knows it by. The tracking stacks here keep
# the bucket inside the cluster (or the compose network), out of a laptop's reach: there, such a download
# retries for many minutes. Through the server, a file takes the server's auth and the one route.
THROUGH_THE_SERVER = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
                      "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false"}


def set_experiment(run_id: str | None = None):
    """Make active, and return, the experiment this process tracks to: the run `run_id`'s (one re-opened),
    or $MLFLOW_RUN_ID's (the run `mlflow run` or KFP opened for this process), else $MLFLOW_EXPERIMENT_ID's,
    else the one named EXPERIMENT ($MLFLOW_EXPERIMENT_NAME, default mnist-gan), created if missing. One
    without a kind is marked a training experiment (KIND_TAG); one of another kind is left as it is. A
    deleted or unknown one is a ConfigError that says what to do."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client, run_id = mlflow.MlflowClient(), run_id or os.environ.get("MLFLOW_RUN_ID")
    experiment_id = (client.get_run(run_id).info.experiment_id if run_id
                     else os.environ.get("MLFLOW_EXPERIMENT_ID"))
    if experiment_id:
        try:
            experiment = client.get_experiment(experiment_id)
        except MlflowException:
            raise ConfigError(f"MLFLOW_EXPERIMENT_ID={experiment_id}: no such experiment at "
                              f"{redacted(mlflow.get_tracking_uri())}") from None
    else:
        experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment and experiment.lifecycle_stage != "active":
        number = experiment.experiment_id
        raise ConfigError(f"experiment {experiment.name!r} (id {number}) is deleted: restore it (mlflow "
                          f"experiments restore --experiment-id {number}) or track to another "
                          "(MLFLOW_EXPERIMENT_NAME=...)")
    experiment = mlflow.set_experiment(experiment_id=experiment.experiment_id if experiment else None,
                                       experiment_name=None if experiment else EXPERIMENT)
    if KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING_KIND)
    return experiment


def artifacts_through_the_server() -> None:
    """This process moves tracked files through the tracking server, not straight to its bucket (a user's
    own setting of THROUGH_THE_SERVER's variables wins). For entry points: it sets the environment."""
    for name, value in THROUGH_THE_SERVER.items():
        os.environ.setdefault(name, value)


def ui_route(experiment_id: str, run_id: str | None = None, artifact: str | None = None) -> str:
    """A page of MLflow's UI in its training view, relative to the UI's address (as a run's description
    links): the experiment's runs, a run, or one of its artifacts shown in the run's Artifacts tab."""
    route = f"#/experiments/{experiment_id}/runs"
    if run_id:
        route += f"/{run_id}" + (f"/artifacts/{urllib.parse.quote(artifact)}" if artifact else "")
    return f"{route}?{TRAINING_VIEW}"


def runs_view(experiment_id: str) -> str:
    """Where a person opens the experiment's training runs: on the tracking server, else on `mlflow ui`."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    server = redacted(uri) if urllib.parse.urlparse(uri).scheme in ("http", "https") else MLFLOW_UI
    return f"{server.rstrip('/')}/{ui_route(experiment_id)}"


def run_link(run_id: str) -> str:
    """Where a person opens the run: its page (in the training view) on an http(s) tracking server, else
    runs:/<id>."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return f"runs:/{run_id}"
    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return f"{redacted(uri).rstrip('/')}/{ui_route(experiment_id, run_id)}"
