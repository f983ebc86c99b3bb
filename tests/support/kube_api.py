"""A stand-in for the Kubernetes API, for the deploy step: no Kubernetes API server can run here (no
cluster, no etcd, no KServe controller), so this local HTTP server speaks the part of the API that
`mnist-gan deploy` uses (GET, POST and merge PATCH of serving.kserve.io/v1beta1 inferenceservices, with
Kubernetes' Status errors) and records every request for the test to check.

It stands in for KServe's controller too, as a script: a spec change is "reconciled" on the
`reconcile_after`-th read after it (until then reads show the status from before, as a real cluster does
for a moment), and the status it then reports says Ready is `ready`, with `reason` and `message`, and
`failure` as the model's last failure when given. `status.observedGeneration` moves with each reconcile,
as KServe's (its Deployment's or Knative Service's generation) does. `mode` is the deployment mode KServe
reports in `status.deploymentMode` once it has reconciled the service ("Knative", the release manifests'
default, or "Standard"; None: an older KServe that reports none). `url` is where the reconciled service
answers (`status.url` and `status.address.url`; None: no URL reported).
"""

from __future__ import annotations

import copy
import re

import yaml

from tests.support import recording_server

ITEM = re.compile(r"/apis/serving\.kserve\.io/v1beta1/namespaces/([^/]+)/inferenceservices(?:/([^/]+))?")
TOKEN = "stand-in-token"


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def write_kubeconfig(path, server: str, namespace: str = "team-a") -> None:
    """A kubeconfig whose current context is `server` with a bearer token, in `namespace`."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": server}}],
        "users": [{"name": "deployer", "user": {"token": TOKEN}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "deployer",
                                                      "namespace": namespace}}]}))


class KubeApi:
    def __init__(self, ready: str = "True", reason: str = "", message: str = "", failure: str = "",
                 reconcile_after: int = 1, kserve: bool = True, forbidden: bool = False,
                 mode: str | None = "Knative", url: str | None = None):
        self.requests: list[dict] = []
        self.objects: dict[tuple[str, str], dict] = {}
        self.ready, self.reason, self.message, self.failure = ready, reason, message, failure
        self.reconcile_after, self.kserve, self.forbidden = reconcile_after, kserve, forbidden
        self.mode, self.url = mode, url
        self._unreconciled: dict[tuple[str, str], int] = {}  # reads left before the pending reconcile

    def add(self, namespace: str, service: dict) -> None:
        """An InferenceService that exists before the test, reconciled and Ready."""
        stored = copy.deepcopy(service)
        stored["metadata"].update(namespace=namespace, generation=1)
        stored["status"] = self._status(1, "True", "", "", "", self.mode, self.url)
        self.objects[(namespace, stored["metadata"]["name"])] = stored

    def after(self, method: str) -> list[dict]:
        """The requests made after the first one of `method`, that one included."""
        first = next(i for i, r in enumerate(self.requests) if r["method"] == method)
        return self.requests[first:]

    def answer(self, request: dict) -> tuple[int, dict | str]:
        method, body = request["method"], request["body"]
        match = ITEM.fullmatch(request["path"])
        if not self.kserve or match is None:
            return 404, "404 page not found"  # what the API server says for a resource it does not serve
        if self.forbidden:
            return _status(403, "Forbidden", f'inferenceservices.serving.kserve.io is forbidden: User '
                           f'"system:serviceaccount:{match[1]}:pipeline-runner" cannot {method.lower()} it')
        namespace, name = match[1], match[2] or (body or {}).get("metadata", {}).get("name")
        key, stored = (namespace, name), self.objects.get((namespace, name))
        if method == "POST":
            if stored is not None:
                return _status(409, "AlreadyExists", f'inferenceservices "{name}" already exists', name)
            stored = copy.deepcopy(body)
            stored["metadata"].update(namespace=namespace, generation=1)
            self.objects[key], self._unreconciled[key] = stored, self.reconcile_after
            return 201, stored
        if stored is None:
            return _status(404, "NotFound", f'inferenceservices.serving.kserve.io "{name}" not found', name)
        if method == "PATCH":
            if request["headers"].get("content-type") != "application/merge-patch+json":
                return _status(415, "UnsupportedMediaType", "only merge patches here")
            patched = merge_patch(stored, body)
            patched["status"] = stored.get("status")  # a subresource: a patch of the object leaves it
            if patched["spec"] != stored["spec"]:
                patched["metadata"]["generation"] += 1
                self._unreconciled[key] = self.reconcile_after
            self.objects[key] = patched
            return 200, patched
        if key in self._unreconciled:
            if self._unreconciled[key] == 0:
                del self._unreconciled[key]
                seen = (stored.get("status") or {}).get("observedGeneration", 0)
                stored["status"] = self._status(seen + 1, self.ready, self.reason, self.message, self.failure,
                                                self.mode, self.url)
            else:
                self._unreconciled[key] -= 1
        return 200, stored

    @staticmethod
    def _status(observed: int, ready: str, reason: str, message: str, failure: str, mode: str | None,
                url: str | None) -> dict:
        said = {k: v for k, v in (("reason", reason), ("message", message)) if v}
        status = {"observedGeneration": observed, "modelStatus": {"transitionStatus": "UpToDate"},
                  **({"deploymentMode": mode} if mode else {}),
                  **({"url": url, "address": {"url": url}} if url else {}),
                  "conditions": [{"type": "IngressReady", "status": "True"},
                                 {"type": "PredictorReady", "status": ready, **said},
                                 {"type": "Ready", "status": ready, **said}]}
        if failure:
            status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad",
                                     "lastFailureInfo": {"reason": "ModelLoadFailed", "message": failure}}
        return status

    def serve(self):
        """Serve until the block ends; yields the base URL."""
        return recording_server.serve(self.answer, self.requests)


def _status(code: int, reason: str, message: str, name: str | None = None) -> tuple[int, dict]:
    """A Kubernetes Status object, as the API server answers an error."""
    details = {"group": "serving.kserve.io", "kind": "inferenceservices", **({"name": name} if name else {})}
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "details": details, "code": code}
