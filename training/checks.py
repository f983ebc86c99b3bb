"""Pre-flight checks: fail in seconds, naming what is wrong, instead of after minutes of training.

Each check runs once per process for the same target (a command's jobs share the answer), and the
cheap ones need no heavy import.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from pathlib import Path

from training import checkpoint, checkpoint_lock, mlflow_env
from training.config import ConfigError, TrainConfig
from training.data import load_mnist
from training.redaction import redacted

SQLITE = "sqlite:///"
DEFAULT_TRACKING_URI = f"{SQLITE}mlflow.db"  # MLflow's, where neither MLFLOW_TRACKING_URI nor ./mlruns is set


@functools.cache
def before_training(config: TrainConfig) -> None:
    """Several devices only on JAX and only as many as it sees, the data (loaded and validated before any
    run starts; the jobs reuse what was loaded), and when resuming, a checkpoint trained with the same
    parameters that no other process is training."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if config.devices > 1 and backend != "jax":
        raise ConfigError(f"devices={config.devices} needs the JAX backend (KERAS_BACKEND=jax); "
                          f"KERAS_BACKEND={backend} trains on one device")
    if config.devices > 1:
        local_devices(config.devices)
    load_mnist(config.data)
    if not config.resume:
        return
    run_dir = checkpoint.latest_run_dir(Path(config.checkpoint_dir))
    if run_dir is None:
        raise ConfigError(f"resume: no checkpoint under checkpoint_dir={config.checkpoint_dir}")
    checkpoint_lock.check_free(run_dir)
    try:
        previous = checkpoint.latest_manifest(run_dir)["config"]
    except (ValueError, KeyError):
        return  # an unreadable newest manifest: the loop falls back to an intact one and checks that
    refused = config.resume_conflicts(previous)
    if refused:
        raise ConfigError(f"cannot resume from {run_dir}: it was trained with different {', '.join(refused)}")


def local_devices(count: int) -> list:
    """The first `count` devices JAX sees here (importing JAX alone takes seconds; Keras, TensorFlow and
    MLflow are not needed to know); ConfigError if it sees fewer."""
    import jax

    local = jax.local_devices()
    if count > len(local):
        raise ConfigError(f"devices={count}, but JAX sees only {len(local)} local device(s) here "
                          f"({', '.join(sorted({d.device_kind for d in local}))}); "
                          f"set devices to at most {len(local)}")
    return local[:count]


def existing_store() -> None:
    """Commands that read what training recorded (register, promote, rollback, deploy) must find a store:
    a sqlite MLFLOW_TRACKING_URI, MLflow's default sqlite:///mlflow.db included, must name an existing
    file. MLflow would create an empty one and report the model missing from it."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    database = sqlite_database(uri)
    if database and not database.is_file():
        raise ConfigError(f"no MLflow store at {uri} ({database.resolve()} does not exist): run this where "
                          "you trained, or set MLFLOW_TRACKING_URI to the store that holds the model")


def sqlite_database(uri: str) -> Path | None:
    """The file a sqlite:/// store URI names (None for any other URI)."""
    if not uri.startswith(SQLITE):
        return None
    return Path(urllib.parse.unquote(uri.removeprefix(SQLITE).split("?", 1)[0]))


def tracking_server() -> None:
    """An http(s) MLFLOW_TRACKING_URI (and MLFLOW_REGISTRY_URI) must answer (any HTTP status, even 401,
    counts as up): MLflow itself would retry for minutes. The error names the URI without its secrets."""
    for variable, role in (("MLFLOW_TRACKING_URI", "tracking"), ("MLFLOW_REGISTRY_URI", "registry")):
        _answers(os.environ.get(variable, ""), f"MLflow {role} server", f"set {variable}")


def target_registry(uri: str) -> None:
    """`promote --to-registry-uri`: a registry MLflow can open (by its scheme), and over http(s) a server
    that answers, named without its secrets."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._model_registry.utils import _get_store_registry  # MLflow's schemes and plugins'

    try:
        _get_store_registry().get_store_builder(uri)
    except MlflowException:
        scheme = urllib.parse.urlparse(uri).scheme
        raise ConfigError(f"to_registry_uri={redacted(uri)}: MLflow has no model registry at {scheme}:// "
                          "URIs") from None
    _answers(uri, "MLflow registry server", "correct to_registry_uri")


@functools.cache
def _answers(uri: str, what: str, fix: str, timeout_s: float = 5.0) -> None:
    """An http(s) `uri` answers /health. Asked at its address: user:password@ would be taken for part of
    the host."""
    import urllib.error
    import urllib.request

    parsed = urllib.parse.urlsplit(redacted(uri))
    if parsed.scheme not in ("http", "https"):
        return
    health = parsed._replace(path=f"{parsed.path.rstrip('/')}/health", query="", fragment="").geturl()
    try:
        urllib.request.urlopen(health, timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(f"{what} {redacted(uri)} is unreachable ({reason}); start it or {fix}") from None


def artifact_store() -> None:
    """When the experiment's artifacts go to an S3 bucket, it must be reachable with this process's
    credentials (MLflow would fail only when logging, after training). The error names the endpoint
    and the bucket, never a credential."""
    import mlflow

    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    _bucket_reachable(mlflow.get_tracking_uri(), endpoint)


@functools.cache
def _bucket_reachable(tracking_uri: str, endpoint: str | None) -> None:
    """Keyed by server and endpoint only: a process tracks to one experiment (MLflow sets
    MLFLOW_EXPERIMENT_ID once it has chosen it, which must not make this check run again)."""
    experiment = mlflow_env.set_experiment()
    location = urllib.parse.urlparse(experiment.artifact_location)
    if location.scheme != "s3":
        return
    import boto3
    import botocore.exceptions

    where = f"S3 artifact store {redacted(endpoint or 'AWS S3')}, bucket {location.netloc}"
    try:
        boto3.client("s3", endpoint_url=endpoint).head_bucket(Bucket=location.netloc)
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "error")
        raise ConfigError(f"{where}: access refused ({code}); check AWS_ACCESS_KEY_ID, "
                          "AWS_SECRET_ACCESS_KEY and that the bucket exists") from None
    except botocore.exceptions.BotoCoreError as err:
        raise ConfigError(f"{where}: unreachable ({type(err).__name__})") from None
