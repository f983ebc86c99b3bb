"""MNIST from a public URL, a local .npz or an s3:// URI, validated before anything trains on it; its
pixels in the generator's range, and the order in which an epoch visits them.

The file is read with `allow_pickle=False`: nothing inside a data file is ever executed.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from training.config import DEFAULT_DATA_URL

# sha256 of the file that `keras.datasets.mnist` downloads from DEFAULT_DATA_URL.
KNOWN_SHA256 = {DEFAULT_DATA_URL: "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}
SPLITS = ("x_train", "y_train", "x_test", "y_test")
CACHE_DIR = Path(os.environ.get("MNIST_GAN_CACHE", Path.home() / ".cache" / "mnist-gan"))
# The trained evaluator classifiers (training/classifier.py): $MNIST_GAN_EVALUATOR_CACHE, else the cache's
# evaluator folder. The pipeline's containers see the host's there, mounted read-only (pipelines/runner.py).
EVALUATOR_CACHE = Path(os.environ.get("MNIST_GAN_EVALUATOR_CACHE", CACHE_DIR / "evaluator"))


class DataError(ValueError):
    """A data source is unreachable or its content is not MNIST; the message names the source."""


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays: images (N, 28, 28) uint8 in [0, 255], labels (N,) uint8 in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    sha256: str
    path: Path  # the verified local file (the source itself, or its cached download)


@functools.lru_cache(maxsize=2)
def load_mnist(source: str) -> Mnist:
    """Fetch (if remote), checksum and validate `source`; raise DataError naming it on any problem.
    Once per process and source: the jobs of one command share what the first one loaded."""
    path = _local_copy(source)
    digest = file_sha256(path)
    expected = KNOWN_SHA256.get(source)
    if expected and digest != expected:
        path.unlink()  # a bad download must not stay in the cache
        raise DataError(f"{source}: sha256 {digest} does not match the published {expected}")
    arrays = read_npz(path, name=source)
    return Mnist(**arrays, source=source, sha256=digest, path=path)


def check_readable(source: str) -> None:
    """Cheap pre-flight check: a local file must exist and be readable; URLs are checked on load."""
    scheme = urlparse(source).scheme
    if scheme in ("http", "https", "s3"):
        return
    path = Path(source)
    if not path.is_file():
        raise DataError(f"data={source}: no such file")
    if not os.access(path, os.R_OK):
        raise DataError(f"data={source}: file is not readable")


def read_npz(path: Path, name: str) -> dict[str, np.ndarray]:
    """Read and validate an mnist.npz; `name` is how errors refer to the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SPLITS if k not in npz.files]
            if missing:
                raise DataError(f"{name}: missing array(s) {', '.join(missing)}; "
                                f"found {', '.join(npz.files) or 'none'}")
            arrays = {k: npz[k] for k in SPLITS}
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{name}: not a readable .npz file ({type(err).__name__}: {err})") from None
    for split in ("train", "test"):
        _validate_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split, name)
    return arrays


def _validate_split(x: np.ndarray, y: np.ndarray, split: str, name: str) -> None:
    if x.dtype != np.uint8:
        raise DataError(f"{name}: x_{split} must be uint8 pixels, got dtype {x.dtype}")
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.shape[0] == 0:
        raise DataError(f"{name}: x_{split} must have shape (N, 28, 28) with N > 0, got {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"{name}: y_{split} must have shape ({x.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{name}: y_{split} must hold integer labels, got dtype {y.dtype}")
    if y.min() < 0 or y.max() > 9:
        raise DataError(f"{name}: y_{split} labels must be in 0..9, got {y.min()}..{y.max()}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local_copy(source: str) -> Path:
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        return _cached(source, lambda tmp: _download_http(source, tmp))
    if parsed.scheme == "s3":
        return _cached(source, lambda tmp: _download_s3(parsed.netloc, parsed.path.lstrip("/"), tmp))
    check_readable(source)
    return Path(source)


def _cached(source: str, download) -> Path:
    """Download once into the cache; the file appears only when complete (atomic rename)."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    target = CACHE_DIR / f"{key}-{Path(urlparse(source).path).name or 'mnist.npz'}"
    if target.is_file() and urlparse(source).scheme != "s3":  # S3 objects may change
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=CACHE_DIR, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        download(tmp_path)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target


def _download_http(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:
        raise DataError(f"{url}: download failed ({err})") from None


def _download_s3(bucket: str, key: str, target: Path) -> None:
    """Honours AWS_* variables; the endpoint comes from AWS_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL."""
    import boto3
    import botocore.exceptions

    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    try:
        boto3.client("s3", endpoint_url=endpoint).download_file(bucket, key, str(target))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        where = f" at {endpoint}" if endpoint else ""
        raise DataError(f"s3://{bucket}/{key}{where}: download failed ({err})") from None


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 in [0, 255] -> (N, 28, 28, 1) float32 in [-1, 1], as (x - 127.5) / 127.5."""
    return ((images.astype(np.float32) - 127.5) / 127.5)[..., np.newaxis]


def steps_per_epoch(num_images: int, batch_size: int, n_iter_d: int) -> int:
    """Training steps for one pass of every image through D (each step takes n_iter_d batches)."""
    return math.ceil(num_images / (batch_size * n_iter_d))


def epoch_batches(num_images: int, batch_size: int, n_iter_d: int, seed: int, epoch: int) -> np.ndarray:
    """Row indices for every step of one epoch: (steps, n_iter_d, batch_size) int32.

    A fresh permutation per (seed, epoch), so a resumed run visits the same batches; the last step is
    filled by wrapping around the permutation, so every batch has the same shape (one compilation).
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    steps = steps_per_epoch(num_images, batch_size, n_iter_d)
    return np.resize(order, steps * n_iter_d * batch_size).astype(np.int32).reshape(
        steps, n_iter_d, batch_size)
