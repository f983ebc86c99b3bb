"""Where this process tracks: the experiment's name, URIs fit to print, and links to runs.

Light on purpose (MLflow is imported only inside `run_link`), so the pre-flight checks and the tracking
code share it without importing each other.
"""

from __future__ import annotations

import os
import urllib.parse

EXPERIMENT = os.environ.get("MLFLOW_EXPERIMENT_NAME", "mnist-gan")


def without_credentials(uri: str) -> str:
    """The URI with any user:password@ taken out of its address, fit to print or to store."""
    parsed = urllib.parse.urlparse(uri)
    return parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")).geturl()


def run_link(run_id: str) -> str:
    """Where a person opens the run: its page on an http(s) tracking server, else runs:/<id>."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return f"runs:/{run_id}"
    experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
    return f"{without_credentials(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
