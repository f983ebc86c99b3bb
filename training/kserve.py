"""The KServe InferenceService that serves the generator: the object itself, created or patched through
the Kubernetes API, then watched until KServe reports it Ready. Nothing here knows the registry (that is
training/deploy.py's business).

`inference_service` is the one definition of the object: infra/k8s/serving/inferenceservice.yaml is
this function's output with a placeholder storageUri (tests/test_deploy.py holds them equal), because
the component image that runs the deploy step carries `training/`, not `infra/`. Credentials are the
pod's service account in a cluster, a kubeconfig elsewhere, never parameters.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# KServe's deployment modes, as its status reports them, under each spelling it has used (0.16 renamed
# RawDeployment to Standard and Serverless to Knative; pkg/constants ParseDeploymentMode).
STANDARD, KNATIVE = "Standard", "Knative"
MODES = {"Standard": STANDARD, "RawDeployment": STANDARD, "Knative": KNATIVE, "Serverless": KNATIVE}
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
RUNTIME = "mnist-gan-mlserver"  # infra/k8s/serving/runtime.yaml
POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
POLL_S = 2.0


class DeployError(RuntimeError):
    """The InferenceService could not be applied, or did not become Ready; one line says why."""


def inference_service(name: str, storage_uri: str, model_reader: str,
                      canary_traffic_percent: int = 0) -> dict:
    """The InferenceService serving the MLflow model at `storage_uri` over the V2 protocol, read with
    the `model_reader` ServiceAccount; with a canary percentage, the new model takes that share of the
    traffic and the last fully rolled-out one the rest."""
    predictor = {
        "serviceAccountName": model_reader,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": {"modelFormat": {"name": "mlflow", "version": "3"}, "runtime": RUNTIME,
                  "protocolVersion": "v2", "storageUri": storage_uri},
    }
    if canary_traffic_percent:
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService", "metadata": {"name": name},
            "spec": {"predictor": predictor}}


@dataclass(frozen=True)
class Applied:
    namespace: str
    name: str
    created: bool  # False: an existing one was patched
    ready: dict  # the object as it was when KServe reported it Ready


def apply(body: dict, namespace: str | None, timeout_s: float) -> Applied:
    """Create the InferenceService `body`, or merge-patch the existing one (a canary percentage it had
    and `body` has not is removed), then wait up to `timeout_s` for KServe to report Ready the spec
    just applied. `namespace` None: the kubeconfig context's, or in a pod the pod's own."""
    from kubernetes import client

    api_client, namespace = _connect(namespace)
    with api_client:
        api = client.CustomObjectsApi(api_client)
        name = body["metadata"]["name"]
        where = f"InferenceService {namespace}/{name}"
        before = _get(api, namespace, name, where)
        if before is None:
            _call(where, "create", api.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                  body, field_validation="Strict")
            changed, seen = False, None
        else:
            patch = {**body, "spec": {"predictor": {"canaryTrafficPercent": None,
                                                    **body["spec"]["predictor"]}}}
            after = _call(where, "patch", api.patch_namespaced_custom_object, GROUP, VERSION, namespace,
                          PLURAL, name, patch, field_validation="Strict")
            changed = after["metadata"].get("generation") != before["metadata"].get("generation")
            seen = (before.get("status") or {}).get("observedGeneration")
        ready = _wait_ready(api, namespace, name, where, changed, seen, timeout_s)
    return Applied(namespace, name, before is None, ready)


def current(name: str, namespace: str | None) -> tuple[str, dict | None]:
    """(the namespace, the InferenceService `name` there as it is now, or None when there is none)."""
    from kubernetes import client

    api_client, namespace = _connect(namespace)
    with api_client:
        return namespace, _get(client.CustomObjectsApi(api_client), namespace, name,
                               f"InferenceService {namespace}/{name}")


def served_storage_uri(service: dict | None) -> str | None:
    """The storageUri the service's predictor is specified to serve (None: no service, or none set)."""
    return (((service or {}).get("spec") or {}).get("predictor") or {}).get("model", {}).get("storageUri")


def deployment_mode(service: dict) -> str | None:
    """How KServe runs the service: `status.deploymentMode` once reconciled, else the annotation that asks
    for a mode; STANDARD or KNATIVE (another mode as it is spelled; None: neither says)."""
    said = ((service.get("status") or {}).get("deploymentMode")
            or (service.get("metadata", {}).get("annotations") or {}).get(MODE_ANNOTATION))
    return MODES.get(said, said)


def check_canary(service: dict, where: str) -> None:
    """Refuse a canary the service's deployment mode cannot give: only Knative (Serverless) mode splits the
    traffic by `canaryTrafficPercent`. In Standard (raw Deployment) mode KServe ignores that field and rolls
    the new model out to all the traffic, and KServe 0.20.0's `spec.canary` gives a canary its own replicas
    and Service but no share of the service's traffic (weighted routes come after 0.20.0): docs/KUBEFLOW.md,
    "Canaries and KServe's deployment modes"."""
    mode = deployment_mode(service)
    if mode == KNATIVE:
        return
    if mode == STANDARD:
        raise DeployError(f"{where} runs in KServe's Standard mode, where a canary share of the traffic is "
                          "not possible (canaryTrafficPercent is ignored there: it would be a full rollout); "
                          "deploy without --canary-traffic-percent, or serve from a Knative (Serverless) "
                          "InferenceService")
    raise DeployError(f"{where} does not say its deployment mode ({mode or 'no status.deploymentMode'}), so "
                      "a canary could silently be a full rollout: deploy without --canary-traffic-percent")


def canary_percent(service: dict | None) -> int:
    """The share of traffic the service's spec sends to its newest model as a canary (0: all of it)."""
    return int((((service or {}).get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent") or 0)


def _wait_ready(api, namespace: str, name: str, where: str, changed: bool, seen: int | None,
                timeout_s: float) -> dict:
    """Poll until Ready is True in a status that reflects the spec applied. KServe's
    status.observedGeneration is its Deployment's or Knative Service's, not the InferenceService's
    own, so a change is picked up once that number moves away from `seen`, the one before it; until
    then a Ready left from the previous model does not count."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = _get(api, namespace, name, where)
        if current is None:
            raise DeployError(f"{where} was deleted while waiting for it to be Ready")
        status = current.get("status") or {}
        fresh = not changed or status.get("observedGeneration") != seen
        if fresh and _condition(status, "Ready").get("status") == "True":
            return current
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeployError(f"{where} was not Ready within {timeout_s:g} s: {_why(status, fresh)}")
        time.sleep(min(POLL_S, remaining))


def _condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), {})


def _why(status: dict, fresh: bool) -> str:
    """What KServe last said, in one line: the Ready condition's reason and message, and the last
    failure to load the model (the storage initializer's or the server's error)."""
    ready = _condition(status, "Ready")
    if not ready:
        return "KServe has reported nothing on it yet (is KServe's controller running?)"
    if not fresh:
        return f"KServe has not picked up the change yet (Ready is {ready.get('status')} from before it)"
    said = ": ".join(part for part in (ready.get("reason"), ready.get("message")) if part)
    line = f"Ready is {ready.get('status')}" + (f": {said}" if said else "")
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
    if failure:
        line += "; last failure: " + ": ".join(str(failure[key]) for key in ("reason", "message")
                                               if failure.get(key))
    return " ".join(line.split())


def _connect(namespace: str | None):
    """An API client with this process's credentials, and the namespace to work in."""
    from kubernetes import client, config

    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):  # in a pod: its service account
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration), namespace or POD_NAMESPACE.read_text().strip()
        kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"  # read now, not at kubernetes' import
        api_client = config.new_client_from_config(kubeconfig, persist_config=False)
        if namespace is None:
            _, active = config.list_kube_config_contexts(kubeconfig)
            namespace = active.get("context", {}).get("namespace") or "default"
        return api_client, namespace
    except (config.ConfigException, OSError) as err:
        raise DeployError(f"no Kubernetes credentials: {' '.join(str(err).split())} (in a pod its service "
                          "account, elsewhere a kubeconfig: $KUBECONFIG or ~/.kube/config)") from None


def _get(api, namespace: str, name: str, where: str) -> dict | None:
    """The InferenceService, or None when there is none by that name."""
    from kubernetes.client.exceptions import ApiException

    try:
        return _call(where, "read", api.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                     name, raise_api_errors=True)
    except ApiException as err:
        details = _status_body(err).get("details") or {}
        if err.status == 404 and details.get("name") == name:
            return None
        if err.status == 404:
            raise DeployError(f"the Kubernetes API has no {GROUP}/{VERSION} {PLURAL}: is KServe installed "
                              "in the cluster?") from None
        raise DeployError(_refused(where, "read", err)) from None


def _call(where: str, verb: str, method, *args, raise_api_errors: bool = False, **kwargs):
    import urllib3
    from kubernetes.client.exceptions import ApiException

    try:
        return method(*args, **kwargs)
    except ApiException as err:
        if raise_api_errors:
            raise
        raise DeployError(_refused(where, verb, err)) from None
    except urllib3.exceptions.HTTPError as err:
        host = method.__self__.api_client.configuration.host
        raise DeployError(f"the Kubernetes API at {host} is unreachable ({type(err).__name__})") from None


def _refused(where: str, verb: str, err) -> str:
    message = _status_body(err).get("message") or err.reason
    hint = (" (the deploy step's service account needs the Role in infra/k8s/serving/deployer.yaml)"
            if err.status == 403 else "")
    return " ".join(f"Kubernetes refused to {verb} {where}: HTTP {err.status}: {message}{hint}".split())


def _status_body(err) -> dict:
    """The Kubernetes Status object an API error carries, if it carries one."""
    try:
        body = json.loads(err.body or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
