"""MNIST from a public URL, a local .npz or an s3:// URI, validated before anything trains on it; its
pixels in the generator's range, and the order in which an epoch visits them.

The file is read with `allow_pickle=False`: nothing inside a data file is ever executed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import math
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from training.config import DEFAULT_DATA_URL
from training.redaction import redacted

# sha256 of the file that `keras.datasets.mnist` downloads from DEFAULT_DATA_URL.
KNOWN_SHA256 = {DEFAULT_DATA_URL: "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"}
SPLITS = ("x_train", "y_train", "x_test", "y_test")
SCHEMES = ("http", "https", "s3")  # of a data source given as a URL; anything else is a local path
CACHE_DIR = Path(os.environ.get("MNIST_GAN_CACHE", Path.home() / ".cache" / "mnist-gan"))
# The trained evaluator classifiers (training/classifier.py): $MNIST_GAN_EVALUATOR_CACHE, else the cache's
# evaluator folder. The pipeline's containers see the host's there, mounted read-only (pipelines/runner.py).
EVALUATOR_CACHE = Path(os.environ.get("MNIST_GAN_EVALUATOR_CACHE", CACHE_DIR / "evaluator"))


class DataError(ValueError):
    """A data source is unreachable or its content is not MNIST; the message names the source, without
    the credentials or signature its URL may carry."""

    def __init__(self, message: str):
        super().__init__(redacted(message))


@dataclass(frozen=True)
class Mnist:
    """The four MNIST arrays: images (N, 28, 28) uint8 in [0, 255], labels (N,) uint8 in 0..9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # where it came from, fit to record (redacted)
    sha256: str
    path: Path  # the verified local file (the source itself, or its cached download)


@functools.lru_cache(maxsize=2)
def load_mnist(source: str) -> Mnist:
    """Fetch (if remote), checksum and validate `source`; raise DataError naming it on any problem.
    Once per process and source: the jobs of one command share what the first one loaded."""
    check_readable(source)
    path, digest, arrays = _verified_copy(source)
    return Mnist(**arrays, source=redacted(source), sha256=digest, path=path)


def check_readable(source: str) -> None:
    """Cheap pre-flight check: a local file must exist and be readable; a URL must have a scheme of
    SCHEMES and a host or bucket (what it serves is checked on load)."""
    parsed = urlparse(source)
    if "://" not in source and parsed.scheme not in SCHEMES:
        _check_local_file(source)
    elif parsed.scheme not in SCHEMES or not parsed.hostname:
        raise DataError(f"data={source}: not a source this project reads; give an http(s) URL, an "
                        "s3://BUCKET/KEY URI or a local path")
    elif parsed.scheme == "s3" and parsed.username is not None:
        raise DataError(f"data={source}: S3 credentials come from AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, not from the URI")


def _check_local_file(source: str) -> None:
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


def _verified_copy(source: str) -> tuple[Path, str, dict[str, np.ndarray]]:
    """The verified local file of `source`, its sha256 and its arrays: a local path as it is, a URL
    through the download cache."""
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        return _cached(source, lambda tmp: _download_http(source, tmp))
    if parsed.scheme == "s3":
        return _cached(source, lambda tmp: _download_s3(parsed.netloc, parsed.path.lstrip("/"), tmp))
    check_readable(source)
    return Path(source), *_verify(Path(source), source)


def _verify(path: Path, source: str) -> tuple[str, dict[str, np.ndarray]]:
    """sha256 and arrays of the file holding `source`, once it matches the published digest (if there
    is one) and is a valid MNIST; DataError otherwise."""
    digest = file_sha256(path)
    expected = KNOWN_SHA256.get(source)
    if expected and digest != expected:
        raise DataError(f"{source}: sha256 {digest} does not match the published {expected}")
    return digest, read_npz(path, name=source)


def _cached(source: str, download) -> tuple[Path, str, dict[str, np.ndarray]]:
    """Download once into the cache. Only a verified file enters it (downloaded beside it, verified,
    then renamed), so a failed or invalid download leaves nothing behind; a cached copy that fails its
    check is discarded, said so, and downloaded again."""
    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    target = CACHE_DIR / f"{key}-{Path(urlparse(source).path).name or 'mnist.npz'}"
    if target.is_file() and urlparse(source).scheme != "s3":  # S3 objects may change
        try:
            return target, *_verify(target, source)
        except DataError as err:
            print(f"data: {err}; discarded the cached copy {target}, downloading it again", flush=True)
            target.unlink(missing_ok=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=CACHE_DIR, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        download(tmp_path)
        verified = _verify(tmp_path, source)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)
    return target, *verified


def _download_http(url: str, target: Path) -> None:
    try:
        with urllib.request.urlopen(_request(url), timeout=60) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, http.client.HTTPException) as err:  # HTTPException: an answer cut or garbled
        raise DataError(f"{url}: download failed ({err})") from None


def _request(url: str) -> urllib.request.Request:
    """The request for `url`: its user:password@ sent as HTTP basic auth (urllib would take it for part
    of the host), to its own server only (not to one it redirects to)."""
    parsed = urlparse(url)
    if parsed.username is None:
        return urllib.request.Request(url)
    request = urllib.request.Request(parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl())
    userinfo = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}"
    request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(userinfo.encode()).decode())
    return request


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
