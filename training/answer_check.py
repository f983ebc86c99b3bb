"""After a deploy, check what answers: one V2 (Open Inference Protocol) request to the InferenceService
the deploy made Ready, its digits compared with the registered version's own answer for the same seeds
(its pyfunc, loaded here from the registry's files, checksum verified). A service serving other files,
another runtime, or a model that loaded wrong fails the deploy before the registry records anything.

The predictor may round a pixel the other way on another CPU, so the digits may differ by one grey level
and no more.
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from training.kserve import DeployError

SEEDS, PER_SEED = (0, 1), 2  # 4 digits: enough to tell two generators apart, cheap to draw
TOLERANCE = 1  # grey levels


def predictor_url(service: dict) -> str | None:
    """Where to send the request: in a pod the service's cluster-local address, elsewhere its public URL
    (None: KServe reports neither)."""
    status = service.get("status") or {}
    local, public = (status.get("address") or {}).get("url"), status.get("url")
    return (local or public) if os.environ.get("KUBERNETES_SERVICE_HOST") else (public or local)


def check(client, name: str, version: str, service: dict, timeout_s: float = 120) -> str:
    """Compare the service's answer with version `version`'s own; DeployError on any difference or on no
    answer. Returns what was checked, in words."""
    url = predictor_url(service)
    if url is None:
        return "its answer not checked: KServe reported no URL"
    model = service["metadata"]["name"]
    answered = v2_digits(f"{url.rstrip('/')}/v2/models/{model}/infer", timeout_s)
    expected = registered_digits(client, name, version)
    if answered.shape != expected.shape:
        raise DeployError(f"InferenceService {model} answered {answered.shape} digits for seeds "
                          f"{list(SEEDS)}, version {version} draws {expected.shape}: it does not serve it")
    worst = int(np.abs(answered.astype(np.int16) - expected.astype(np.int16)).max())
    if worst > TOLERANCE:
        raise DeployError(f"InferenceService {model} answered other digits than version {version} draws for "
                          f"seeds {list(SEEDS)} (pixels differ by up to {worst} grey levels): it does not "
                          "serve that version's model")
    return f"its answer checked: the digits of version {version} for seeds {list(SEEDS)}"


def request_body() -> dict:
    """The V2 request for PER_SEED digits of each of SEEDS, as a pandas table (MLServer's MLflow runtime)."""
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": "seed", "shape": [len(SEEDS)], "datatype": "INT64", "data": list(SEEDS)},
                       {"name": "n", "shape": [len(SEEDS)], "datatype": "INT64",
                        "data": [PER_SEED] * len(SEEDS)}]}


def v2_digits(url: str, timeout_s: float) -> np.ndarray:
    """The (N, 28, 28) uint8 digits the predictor at `url` answers to request_body()."""
    request = urllib.request.Request(url, json.dumps(request_body()).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
        (output,) = answer["outputs"]
        return np.asarray(output["data"], np.uint8).reshape(output["shape"])
    except urllib.error.HTTPError as err:
        said = " ".join(err.read().decode(errors="replace").split())[:300]
        raise DeployError(f"the new predictor at {url} answered HTTP {err.code}: {said}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DeployError(f"the new predictor at {url} did not answer ({reason})") from None
    except (ValueError, KeyError, TypeError) as err:
        raise DeployError(f"the new predictor at {url} answered no V2 digits ({type(err).__name__}: "
                          f"{err})") from None


def registered_digits(client, name: str, version: str) -> np.ndarray:
    """What the registered version itself draws for request_body()'s seeds: its pyfunc, from its files."""
    import mlflow
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(name, version), dst_path=tmp,
            tracking_uri=client.tracking_uri)
        model = mlflow.pyfunc.load_model(str(Path(model_dir)))
        return np.asarray(model.predict(pd.DataFrame({"seed": list(SEEDS), "n": [PER_SEED] * len(SEEDS)})))
