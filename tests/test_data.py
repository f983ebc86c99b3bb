"""The MNIST loader: the real digits load; every malformed file is refused with its name and problem."""

from __future__ import annotations

import hashlib
import re

import boto3
import numpy as np
import pytest

from infra.local_stack import s3_server
from tests.conftest import run_cli
from training.data import (
    KNOWN_SHA256,
    DataError,
    epoch_batches,
    file_sha256,
    load_mnist,
    read_npz,
    steps_per_epoch,
    to_unit_range,
)


@pytest.fixture(scope="module")
def real_sha256(mnist_path) -> str:
    """The digest of the test run's MNIST (the public file's, or another order of the same digits)."""
    return hashlib.sha256(mnist_path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def arrays(mnist_path):
    with np.load(mnist_path) as npz:
        return {k: npz[k] for k in npz.files}


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path



@pytest.fixture(autouse=True)
def _fresh_process():
    """Each test loads as a new process would: the per-process memo of load_mnist starts empty."""
    load_mnist.cache_clear()

def test_real_mnist_loads_with_its_digest(mnist_path, real_sha256):
    mnist = load_mnist(str(mnist_path))
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_test.shape == (10000, 28, 28)
    assert mnist.sha256 == real_sha256
    assert np.bincount(mnist.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265,
                                                   5851, 5949]


def test_truncated_file_is_refused(tmp_path, mnist_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(mnist_path.read_bytes()[: 2_000_000])
    with pytest.raises(DataError, match=f"{truncated}: not a readable .npz file"):
        load_mnist(str(truncated))


def test_wrongly_shaped_images_are_refused(tmp_path, arrays):
    path = _write(tmp_path / "flat.npz", **{**arrays, "x_train": arrays["x_train"].reshape(60000, 784)})
    with pytest.raises(DataError,
                       match=r"flat.npz: x_train must have shape \(N, 28, 28\) .* got \(60000, 784\)"):
        load_mnist(str(path))


@pytest.mark.parametrize(("change", "message"), [
    ({"x_train": None}, "missing array\\(s\\) x_train"),
    ({"x_test": "float"}, "x_test must be uint8 pixels, got dtype float32"),
    ({"y_train": "short"}, r"y_train must have shape \(60000,\), got \(59999,\)"),
    ({"y_test": "eleven"}, "y_test labels must be in 0..9, got 0..11"),
    ({"x_train": "nan"}, "x_train must be uint8 pixels, got dtype float64"),
    ({"y_train": "nan"}, "y_train must hold integer labels, got dtype float64"),
])
def test_malformed_arrays_are_refused(tmp_path, arrays, change, message):
    bad = dict(arrays)
    (key, how), = change.items()
    if how is None:
        del bad[key]
    elif how == "float":
        bad[key] = bad[key].astype(np.float32)
    elif how == "nan":
        bad[key] = bad[key].astype(np.float64)
        bad[key][0] = np.nan
    elif how == "short":
        bad[key] = bad[key][:-1]
    else:
        bad[key] = bad[key].copy()
        bad[key][0] = 11
    with pytest.raises(DataError, match=message):
        read_npz(_write(tmp_path / "bad.npz", **bad), name="bad.npz")


def test_pickled_object_arrays_are_refused_unopened(tmp_path, arrays):
    path = _write(tmp_path / "pickled.npz", **{**arrays, "y_train": np.array([object()] * 60000)})
    with pytest.raises(DataError, match="pickled.npz: not a readable .npz file"):
        load_mnist(str(path))


@pytest.mark.slow
def test_s3_source_downloads_through_boto3(tmp_path, mnist_path, monkeypatch, real_sha256):
    with s3_server(tmp_path / "s3") as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr("training.data.CACHE_DIR", tmp_path / "cache")
        boto3.client("s3").upload_file(str(mnist_path), "mnist-gan", "data/mnist.npz")
        mnist = load_mnist("s3://mnist-gan/data/mnist.npz")
        assert mnist.sha256 == real_sha256 and mnist.source == "s3://mnist-gan/data/mnist.npz"
        with pytest.raises(DataError, match=r"s3://mnist-gan/missing.npz at http://127.0.0.1:\d+: "
                                             "download failed"):
            load_mnist("s3://mnist-gan/missing.npz")
        # a fresh process, as a user runs it (boto3 caches the credentials it resolved in this one)
        refused = run_cli(["train", "--data", "s3://mnist-gan/data/mnist.npz", "--preset", "tiny"], tmp_path,
                          **{**env, "AWS_SECRET_ACCESS_KEY": "wrong-secret-Jd72"})
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert re.search(r"s3://mnist-gan/data/mnist.npz at http://127.0.0.1:\d+: download failed",
                         refused.stderr.strip().splitlines()[-1])
        for secret in ("wrong-secret-Jd72", env["AWS_ACCESS_KEY_ID"]):
            assert secret not in refused.stdout + refused.stderr


def test_preprocessing_scales_to_unit_range():
    pixels = np.array([[[0, 127, 255] + [0] * 25] * 28], dtype=np.uint8)
    scaled = to_unit_range(pixels)
    assert scaled.shape == (1, 28, 28, 1) and scaled.dtype == np.float32
    assert scaled[0, 0, :3, 0].tolist() == pytest.approx([-1.0, -0.5 / 127.5, 1.0])


def test_an_epoch_visits_every_image_in_full_batches():
    batches = epoch_batches(1000, 64, 1, seed=3, epoch=0)
    assert batches.shape == (steps_per_epoch(1000, 64, 1), 1, 64) == (16, 1, 64)
    assert set(batches.ravel().tolist()) == set(range(1000))
    assert not np.array_equal(batches, epoch_batches(1000, 64, 1, seed=3, epoch=1))
    assert np.array_equal(batches, epoch_batches(1000, 64, 1, seed=3, epoch=0))


class Served(str):
    """The server's base URL; `requests` lists the paths it was asked for."""

    def __new__(cls, url: str, requests: list[str]):
        served = super().__new__(cls, url)
        served.requests = requests
        return served


@pytest.fixture
def http_server(tmp_path, mnist_path):
    """A real HTTP server on 127.0.0.1 serving a copy of the real MNIST as /mnist.npz."""
    import functools
    import http.server
    import shutil
    import threading

    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(mnist_path, root / "mnist.npz")
    served: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            served.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    handler = functools.partial(Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(f"http://127.0.0.1:{server.server_address[1]}", served)
    server.shutdown()
    server.server_close()


def test_url_source_is_downloaded_once_and_cached(http_server, tmp_path, monkeypatch, real_sha256):
    cache = tmp_path / "cache"
    monkeypatch.setattr("training.data.CACHE_DIR", cache)
    url = f"{http_server}/mnist.npz"
    assert load_mnist(url).sha256 == real_sha256
    (cached,) = cache.iterdir()
    (tmp_path / "www" / "mnist.npz").unlink()
    load_mnist.cache_clear()  # a new process: only the file cache remains
    assert load_mnist(url).sha256 == real_sha256, "the second load reads the cache"
    with pytest.raises(DataError, match=f"{http_server}/other.npz: download failed"):
        load_mnist(f"{http_server}/other.npz")
    assert [p.name for p in cache.iterdir()] == [cached.name], "no partial download is left"


def test_url_whose_digest_differs_from_the_published_one_is_refused(http_server, tmp_path, monkeypatch,
                                                                    real_sha256):
    cache = tmp_path / "cache"
    monkeypatch.setattr("training.data.CACHE_DIR", cache)
    url = f"{http_server}/mnist.npz"
    monkeypatch.setitem(KNOWN_SHA256, url, "0" * 64)
    with pytest.raises(DataError, match=f"{url}: sha256 {real_sha256} does not match the published 0+"):
        load_mnist(url)
    assert list(cache.iterdir()) == [], "the rejected download was removed from the cache"


class FlakyServer:
    """A real HTTP server on 127.0.0.1 whose /mnist.npz answers as `answer` says: "garbage" (200 and
    random bytes), "error" (500), "cut" (200, the real file's length announced, half of it sent) or
    "real" (the real MNIST). `asked` counts the requests."""

    def __init__(self, real: bytes):
        self.real, self.answer, self.asked = real, "real", 0

    def respond(self, handler) -> None:
        self.asked += 1
        if self.answer == "error":
            handler.send_error(500)
            return
        body = np.random.default_rng(self.asked).bytes(50_000) if self.answer == "garbage" else self.real
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[: len(body) // 2] if self.answer == "cut" else body)


@pytest.fixture
def flaky_server(mnist_path):
    import http.server
    import threading

    flaky = FlakyServer(mnist_path.read_bytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            flaky.respond(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    flaky.url = f"http://127.0.0.1:{server.server_address[1]}/mnist.npz"
    yield flaky
    server.shutdown()
    server.server_close()


def test_a_failed_or_invalid_download_leaves_nothing_in_the_cache(flaky_server, tmp_path, monkeypatch,
                                                                  real_sha256):
    cache = tmp_path / "cache"
    monkeypatch.setattr("training.data.CACHE_DIR", cache)
    for answer, problem in [("garbage", "not a readable .npz file"), ("error", "download failed .*500"),
                            ("cut", "download failed|not a readable .npz file")]:
        flaky_server.answer = answer
        load_mnist.cache_clear()  # each load as a new process makes it
        with pytest.raises(DataError, match=f"{flaky_server.url}: ({problem})"):
            load_mnist(flaky_server.url)
        assert list(cache.iterdir()) == [], f"a {answer} answer left {list(cache.iterdir())}"
    flaky_server.answer = "real"
    load_mnist.cache_clear()
    assert load_mnist(flaky_server.url).sha256 == real_sha256, "the server, fixed, is asked again"
    assert flaky_server.asked == 4 and len(list(cache.iterdir())) == 1


def test_a_cached_copy_that_fails_its_check_is_discarded_and_downloaded_again(flaky_server, tmp_path,
                                                                             monkeypatch, real_sha256,
                                                                             capsys):
    cache = tmp_path / "cache"
    monkeypatch.setattr("training.data.CACHE_DIR", cache)
    (cached,) = [load_mnist(flaky_server.url).path]
    cached.write_bytes(cached.read_bytes()[:1000])  # a disk fault, or a bad answer an older version cached
    load_mnist.cache_clear()
    capsys.readouterr()
    assert load_mnist(flaky_server.url).sha256 == real_sha256 and file_sha256(cached) == real_sha256
    said = capsys.readouterr().out.strip().splitlines()
    assert len(said) == 1 and "not a readable .npz file" in said[0], said
    assert f"discarded the cached copy {cached}, downloading it again" in said[0]
    assert flaky_server.asked == 2 and list(cache.iterdir()) == [cached]


def test_data_download_writes_a_checked_local_copy_and_never_overwrites(http_server, tmp_path, real_sha256):
    from tests.conftest import run_cli

    url, target = f"{http_server}/mnist.npz", tmp_path / "offline" / "mnist.npz"
    done = run_cli(["data", "download", "--data", url, "--to", str(target)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert file_sha256(target) == real_sha256 and f"--data {target}" in done.stdout
    again = run_cli(["data", "download", "--data", url, "--to", str(target)], tmp_path)
    assert again.returncode == 2 and "exists; choose a new file" in again.stderr
    assert file_sha256(target) == real_sha256, "the existing copy is untouched"
    missing = run_cli(["data", "download", "--data", f"{http_server}/gone.npz", "--to",
                       str(tmp_path / "other.npz")], tmp_path)
    assert missing.returncode == 2 and f"{http_server}/gone.npz: download failed" in missing.stderr
    assert not (tmp_path / "other.npz").exists()


# ---- where the tests take MNIST from ----

def test_the_tests_take_mnist_from_the_variable_then_the_cache_then_a_checked_download(
        http_server, tmp_path, monkeypatch, real_sha256):
    from tests.conftest import TEST_DATA, TEST_DATA_URL, find_test_mnist

    monkeypatch.setattr("training.data.CACHE_DIR", tmp_path / "cache")
    url = f"{http_server}/mnist.npz"
    monkeypatch.setitem(KNOWN_SHA256, url, real_sha256)  # a mirror of the public file, checked the same way
    downloaded = find_test_mnist({TEST_DATA_URL: url})
    assert downloaded.parent == tmp_path / "cache" and file_sha256(downloaded) == real_sha256
    assert http_server.requests == ["/mnist.npz"]

    load_mnist.cache_clear()  # a later test run: the cache answers, the server is not asked
    assert find_test_mnist({TEST_DATA_URL: url}) == downloaded and http_server.requests == ["/mnist.npz"]

    local = tmp_path / "elsewhere" / "mnist.npz"
    local.parent.mkdir()
    local.write_bytes(downloaded.read_bytes())
    assert find_test_mnist({TEST_DATA: str(local), TEST_DATA_URL: url}) == local, "the variable comes first"
    assert http_server.requests == ["/mnist.npz"]

    with pytest.raises(DataError, match=f"{TEST_DATA}={tmp_path}/missing.npz: .*no such file"):
        find_test_mnist({TEST_DATA: str(tmp_path / "missing.npz")})
    monkeypatch.setitem(KNOWN_SHA256, url, "0" * 64)
    load_mnist.cache_clear()
    with pytest.raises(DataError, match="does not match the published"):
        find_test_mnist({TEST_DATA_URL: url})  # a download that fails its digest is not used


def test_offline_without_data_the_test_run_stops_once_naming_both_ways(tmp_path):
    """A test run of its own, as a contributor without internet or a local copy starts it."""
    import subprocess
    import sys

    from infra.local_stack import free_port
    from tests.conftest import ROOT, TEST_DATA, TEST_DATA_URL, cli_env

    env = {k: v for k, v in cli_env(tmp_path).items() if k != TEST_DATA}
    env.update({"MNIST_GAN_CACHE": str(tmp_path / "empty-cache"),
                TEST_DATA_URL: f"http://127.0.0.1:{free_port()}/mnist.npz"})  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_config.py::test_unknown_keys_are_rejected"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 4, done.stdout + done.stderr
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1, done.stdout + done.stderr
    assert all(part in errors[0] for part in (TEST_DATA, "mnist-gan data download", "download failed"))
    assert "passed" not in done.stdout, "no test ran"
