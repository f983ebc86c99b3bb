"""The champion behind a KServe InferenceService: the champion version's model files as a storageUri the
predictor can read, the service pointed at them (training/kserve.py), and the registry told which
version serves where.

The registry records it on the versions: `serving.inferenceservice` (`<namespace>/<name>`) on each
version the service sends traffic to, and `serving.canary_traffic_percent` on one that gets only that
share. A full deploy takes the tags off every other version; a canary keeps them on the version last
rolled out to all the traffic, which takes the rest, as KServe does.

Light to import: MLflow and Kubernetes are imported when a deploy runs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

from training import config, kserve
from training.config import ConfigError, Param
from training.redaction import redacted

SERVING_TAG = "serving.inferenceservice"
CANARY_TAG = "serving.canary_traffic_percent"
DESTINATION_VARIABLE = "MNIST_GAN_ARTIFACTS_DESTINATION"  # the default of --artifacts-destination

INFERENCE_SERVICE = Param("inference_service", "str", None,
                          "the KServe InferenceService that serves the champion (created if absent)")
NAMESPACE = Param("namespace", "str", None, "its namespace (default: the kubeconfig context's; in a pod, "
                  "the pod's)")
ARTIFACTS_DESTINATION = Param(
    "artifacts_destination", "str", "s3://mlflow-artifacts",
    "the tracking server's --artifacts-destination, s3://BUCKET[/PREFIX]: where its mlflow-artifacts:/ "
    f"files are in S3 (or ${DESTINATION_VARIABLE})")
MODEL_READER = Param("model_reader", "str", "mnist-gan-model-reader",
                     "the ServiceAccount the predictor reads the artifact store with (infra/k8s/serving)")
CANARY_TRAFFIC_PERCENT = Param("canary_traffic_percent", "int", 0,
                               "send this share of the traffic to the new champion, the rest to the one "
                               "rolled out before (0 = all of it)", {"min": 0, "max": 99})
TIMEOUT = Param("timeout", "int", 600, "seconds to wait for the InferenceService to be Ready", {"min": 1})
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label, as Kubernetes names are
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # an S3 bucket name: no user:password@, no port


@dataclass(frozen=True)
class Target:
    """Which InferenceService serves the champion, and how it is rolled out; checked on construction."""

    inference_service: str
    namespace: str | None = NAMESPACE.default
    artifacts_destination: str = ARTIFACTS_DESTINATION.default
    model_reader: str = MODEL_READER.default
    canary_traffic_percent: int = CANARY_TRAFFIC_PERCENT.default
    timeout: int = TIMEOUT.default

    def __post_init__(self) -> None:
        for p in PARAMS:
            if getattr(self, p.name) is not None:
                config.check(p, getattr(self, p.name))
        for name in ("inference_service", "namespace", "model_reader"):
            value = getattr(self, name)
            if value is not None and not NAME.fullmatch(value):
                raise ConfigError(f"{name} must be a Kubernetes name: at most 63 lower-case letters, digits "
                                  f"and '-', starting and ending with a letter or digit (got {value!r})")
        destination = urlparse(self.artifacts_destination)
        if (destination.scheme != "s3" or not BUCKET.fullmatch(destination.netloc) or destination.query
                or destination.fragment):
            raise ConfigError("artifacts_destination must be the tracking server's s3://BUCKET[/PREFIX] "
                              f"(got {redacted(self.artifacts_destination)!r})")


PARAMS = (INFERENCE_SERVICE, NAMESPACE, ARTIFACTS_DESTINATION, MODEL_READER, CANARY_TRAFFIC_PERCENT, TIMEOUT)


def default_destination() -> str:
    return os.environ.get(DESTINATION_VARIABLE) or ARTIFACTS_DESTINATION.default


@dataclass(frozen=True)
class Deployed:
    model_name: str
    version: str
    service: str  # <namespace>/<name>
    storage_uri: str
    created: bool  # False: an existing InferenceService was patched
    canary_traffic_percent: int
    applied: bool = True  # False: the service already served it; only the registry's tags were put right
    champion_now: str | None = None  # the champion when the deploy was recorded, had it moved meanwhile
    checked: str = ""  # whether the service's answer was checked against the version's own, in words


def storage_uri(artifact_uri: str, artifacts_destination: str) -> str:
    """Where the predictor downloads a version's model files: s3:// as it is; mlflow-artifacts:/PATH
    (files the tracking server proxies) as the same PATH under its artifacts destination."""
    location = urlparse(artifact_uri)
    if location.scheme == "s3" and location.netloc:
        return artifact_uri
    if location.scheme == "mlflow-artifacts" and location.path.strip("/"):
        return f"{artifacts_destination.rstrip('/')}/{location.path.strip('/')}"
    raise kserve.DeployError(
        f"the model files at {artifact_uri or '(none)'} cannot be served by KServe: it reads s3:// here, so "
        "the registry must keep its files in S3 or behind a tracking server whose artifacts destination "
        "is S3 (mlflow-artifacts:/)")


def deploy(name: str, target: Target, client=None) -> Deployed:
    """Point `target`'s InferenceService at the champion of model `name` (created if absent), wait until
    KServe reports it Ready, then record on the registry which versions it serves: under the model's
    promotion lock, and only if the service still serves what this deploy applied (a racing deploy or
    rollback may have changed it meanwhile: then its record stands, and this one fails saying so)."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    version, uri = _champion(client, name, target)
    if target.canary_traffic_percent:
        target = _canary_possible(target)
    body = kserve.inference_service(target.inference_service, uri, target.model_reader,
                                    target.canary_traffic_percent)
    applied = kserve.apply(body, target.namespace, target.timeout)
    service = f"{applied.namespace}/{applied.name}"
    checked = _answer_checked(client, name, version, applied.ready, target)
    champion_now = _record_if_served(client, name, version, service, uri, target)
    return Deployed(name, version, service, uri, applied.created, target.canary_traffic_percent,
                    champion_now=champion_now if champion_now != version else None, checked=checked)


def _canary_possible(target: Target) -> Target:
    """The target of a canary deploy: as it is where the service's mode splits traffic (else DeployError),
    or without the canary when the service serves nothing yet (no earlier model to keep the rest)."""
    namespace, now = kserve.current(target.inference_service, target.namespace)
    if kserve.served_storage_uri(now) is None:
        return dataclasses.replace(target, canary_traffic_percent=0)
    kserve.check_canary(now, f"InferenceService {namespace}/{target.inference_service}")
    return target


def reconcile(name: str, target: Target, client=None) -> Deployed | None:
    """One look of the follower: deploy the champion when the service specifies any other model (or does
    not exist); put the registry's tags right when they do not say what it serves. None: both agree."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    version, uri = _champion(client, name, target)
    namespace, now = kserve.current(target.inference_service, target.namespace)
    if kserve.served_storage_uri(now) != uri:
        return deploy(name, target, client)
    service, canary = f"{namespace}/{target.inference_service}", kserve.canary_percent(now)
    if _tags_say(client, name, version, service, canary):
        return None
    as_served = dataclasses.replace(target, namespace=namespace, canary_traffic_percent=canary)
    checked = _answer_checked(client, name, version, now, as_served)
    _record_if_served(client, name, version, service, uri, as_served)
    return Deployed(name, version, service, uri, False, canary, applied=False, checked=checked)


def follow(name: str, target: Target, period_s: float, on_round: Callable[[Deployed | None], None],
           on_error: Callable[[str], None], stop: threading.Event, client=None) -> None:
    """Keep `target`'s InferenceService on the champion, level-triggered: every `period_s`, whatever moved
    the alias (a promotion, a rollback, the MLflow UI, a plain MlflowClient call) and whatever was missed
    before, `reconcile`. A failed look (the registry or the cluster unreachable, a deploy not Ready in
    time) is reported and tried again next period. Returns when `stop` is set."""
    from mlflow.exceptions import MlflowException

    from training.registry import RegistryError

    while not stop.is_set():
        try:
            on_round(reconcile(name, target, client))
        except (RegistryError, kserve.DeployError, MlflowException) as err:
            on_error(" ".join(str(err).split()))
        stop.wait(period_s)


def _champion(client, name: str, target: Target) -> tuple[str, str]:
    """The champion's version and the storageUri of its files."""
    from training import registry

    version = registry.alias_version(client, name, registry.CHAMPION)
    if version is None:
        raise registry.RegistryError(f"{name} has no '{registry.CHAMPION}' to deploy")
    files = client.get_model_version_download_uri(name, version)
    return version, storage_uri(files, target.artifacts_destination)


def _record_if_served(client, name: str, version: str, service: str, uri: str, target: Target) -> str | None:
    """Record that `version` serves at `service`, under the promotion lock (racing deploys, rollbacks and
    promotions take turns there), if the service still specifies `uri` with the canary share this deploy
    set; returns the champion as the registry then says (it may have moved since the deploy began)."""
    from training import registry
    from training.promotion_lock import promotion_lock

    with promotion_lock(client, name):
        _, now = kserve.current(target.inference_service, target.namespace)
        served = (kserve.served_storage_uri(now), kserve.canary_percent(now))
        if served != (uri, target.canary_traffic_percent):
            raise kserve.DeployError(
                f"InferenceService {service} was changed by another deploy while this one waited: it now "
                f"specifies {served[0] or 'nothing'}"
                f"{f' ({served[1]}% canary)' if served[1] else ''}, not version {version}'s files; the "
                "registry's serving tags are left to that deploy")
        _record(client, name, version, service, target.canary_traffic_percent)
        return registry.alias_version(client, name, registry.CHAMPION)


def _answer_checked(client, name: str, version: str, service: dict, target: Target) -> str:
    """Check what the service answers against the version's own digits (training/answer_check.py), before
    anything is recorded; a canary's share of the traffic cannot be addressed, so it is not checked."""
    if target.canary_traffic_percent:
        return "its answer not checked: a canary gets only a share of the requests"
    from training import answer_check

    return answer_check.check(client, name, version, service)


def _tags_say(client, name: str, version: str, service: str, canary: int) -> bool:
    """Whether the registry's tags say that `service` serves `version` (with `canary` percent of the
    traffic, the rest staying on at most one version rolled out before)."""
    serving = {str(v.version): v.tags.get(CANARY_TAG) for v in client.search_model_versions(f"name='{name}'")
               if v.tags.get(SERVING_TAG) == service}
    if version not in serving or serving.pop(version) != (str(canary) if canary else None):
        return False
    return not serving or (canary > 0 and len(serving) == 1 and None in serving.values())


def _record(client, name: str, version: str, service: str, canary: int) -> None:
    for other in client.search_model_versions(f"name='{name}'"):
        if str(other.version) == version or other.tags.get(SERVING_TAG) != service:
            continue
        if canary and CANARY_TAG not in other.tags:
            continue  # rolled out before: it takes the rest of the traffic
        for key in (SERVING_TAG, CANARY_TAG):
            if key in other.tags:
                client.delete_model_version_tag(name, str(other.version), key)
    client.set_model_version_tag(name, version, SERVING_TAG, service)
    if canary:
        client.set_model_version_tag(name, version, CANARY_TAG, str(canary))
    elif CANARY_TAG in client.get_model_version(name, version).tags:
        client.delete_model_version_tag(name, version, CANARY_TAG)
