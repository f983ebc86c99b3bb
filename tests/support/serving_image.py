"""The serving image as KServe runs it: the model downloaded from S3 by KServe's storage initializer (PyPI
kserve-storage, locked in requirements/storage-initializer.txt, in a venv of its own) with the environment
KServe gives it from the model reader's Secret, then MLServer serving the folder from a read-only
/mnt/models. No KServe controller runs here: this is what its storage initializer and predictor do."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests
import yaml

from infra.local_stack import free_port
from tests.conftest import ROOT
from tests.support.container_stack import container, wait_for
from training.data import CACHE_DIR

SERVING_IMAGE = os.environ.get("MNIST_GAN_SERVING_IMAGE", "ghcr.io/mnist-gan/mnist-gan-serving:0.1.0")
STORAGE_INITIALIZER = ROOT / "requirements" / "storage-initializer.txt"
SERVING = ROOT / "infra" / "k8s" / "serving"


def storage_initializer() -> Path:
    """The Python of a venv holding the locked kserve-storage, made once per lock in the project's cache."""
    locked = STORAGE_INITIALIZER.read_bytes()
    venv = CACHE_DIR / f"storage-initializer-{hashlib.sha256(locked).hexdigest()[:12]}"
    if not (venv / "bin" / "python").exists():
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".storage-initializer-", dir=CACHE_DIR))
        subprocess.run([sys.executable, "-m", "venv", str(staging)], check=True)
        subprocess.run([str(staging / "bin" / "python"), "-m", "pip", "install", "-q", "--require-hashes",
                        "--no-deps", "-r", str(STORAGE_INITIALIZER)], check=True, timeout=900)
        try:
            staging.rename(venv)
        except OSError:  # another worker made it first
            shutil.rmtree(staging)
    return venv / "bin" / "python"


def kserve_s3_env(endpoint: str, access_key_id: str, secret_access_key: str) -> dict[str, str]:
    """The environment KServe gives the storage initializer from the model reader's Secret
    (pkg/credentials/s3): the key pair from its data, the rest from its annotations in
    infra/k8s/serving, with the endpoint (host:port) replaced by this machine's S3."""
    (secret,) = yaml.safe_load((SERVING / "kustomization.yaml").read_text())["secretGenerator"]
    annotations = {key.removeprefix("serving.kserve.io/s3-"): value
                   for key, value in secret["options"]["annotations"].items()}
    scheme = "http" if annotations["usehttps"] == "0" else "https"
    return {"AWS_ACCESS_KEY_ID": access_key_id, "AWS_SECRET_ACCESS_KEY": secret_access_key,
            "S3_USE_HTTPS": annotations["usehttps"], "S3_ENDPOINT": endpoint,
            "AWS_ENDPOINT_URL": f"{scheme}://{endpoint}", "S3_VERIFY_SSL": annotations["verifyssl"],
            "AWS_DEFAULT_REGION": annotations["region"]}


def download(storage_uri: str, target: Path, env: dict[str, str]) -> Path:
    """What the storage initializer does with the predictor's storageUri: its files into `target`, in a
    process that sees only KServe's environment."""
    script = "import sys; from kserve_storage import Storage; Storage.download(sys.argv[1], sys.argv[2])"
    done = subprocess.run([str(storage_initializer()), "-c", script, storage_uri, str(target)],
                          env={"PATH": os.environ["PATH"], "HOME": str(target.parent), **env},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


@contextlib.contextmanager
def serving(model_dir: Path, timeout: float = 300):
    """The serving image with `model_dir` mounted read-only at /mnt/models, on free ports of 127.0.0.1;
    yields (container id, base URL) once the model is ready."""
    ports = {"MLSERVER_HTTP_PORT": free_port(), "MLSERVER_GRPC_PORT": free_port(),
             "MLSERVER_METRICS_PORT": free_port()}
    env = {"MLSERVER_HOST": "127.0.0.1", **{name: str(port) for name, port in ports.items()}}
    with container(SERVING_IMAGE, env=env, volumes={model_dir: "/mnt/models:ro"}) as container_id:
        url = f"http://127.0.0.1:{ports['MLSERVER_HTTP_PORT']}"
        wait_for(lambda: requests.get(f"{url}/v2/models/mnist-gan/ready", timeout=3).status_code == 200,
                 "the serving image", container_id, timeout=timeout)
        yield container_id, url
