"""`mlflow models serve` of a registered generator: images for good requests, 4xx for bad ones."""

from __future__ import annotations

import contextlib
import sys
import urllib.request
from pathlib import Path

import numpy as np

from infra.local_stack import background, free_port, on_free_ports, wait_until
from tests.conftest import cli_env
from tests.support.two_generators import USES_LAB, post

pytestmark = USES_LAB


def test_mlflow_models_serve_answers_with_images_and_4xx_for_bad_requests(lab):
    name = "serve-test"
    lab.champion_of_the_trained_generator(name)
    env = cli_env(lab.directory, MLFLOW_TRACKING_URI=lab.uri)
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    log = lab.directory / "serve.log"

    @contextlib.contextmanager
    def serve():
        port = free_port()
        args = [mlflow_cli, "models", "serve", "-m", f"models:/{name}@champion", "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(port)]
        base = f"http://127.0.0.1:{port}"
        with background(args, log, env) as server:
            wait_until(lambda: urllib.request.urlopen(f"{base}/ping", timeout=2).status == 200,
                       "mlflow models serve", server, log, timeout=180)
            yield f"{base}/invocations"

    with on_free_ports(serve) as url:
        status, body = post(url, {"dataframe_split": {"columns": ["seed", "n"], "data": [[7, 3], [8, 2]]}})
        images = np.asarray(body["predictions"])
        assert status == 200 and images.shape == (5, 28, 28)
        assert images.min() >= 0 and images.max() <= 255 and np.issubdtype(images.dtype, np.integer)
        status, body = post(url, {"dataframe_split": {"columns": ["seed", "n"], "data": [[7, 3]]}})
        assert np.array_equal(np.asarray(body["predictions"]), images[:3]), "same seed, same digits"
        z = np.zeros((2, 100)).tolist()
        status, body = post(url, {"dataframe_split": {"columns": ["z"], "data": [[row] for row in z]}})
        assert status == 200 and np.asarray(body["predictions"]).shape == (2, 28, 28)
        for bad, message in (({"columns": ["seed"], "data": [[1]]}, "needs columns seed and n"),
                             ({"columns": ["seed", "n"], "data": [[1, -5]]}, "n must be an integer"),
                             ({"columns": ["seed", "n"], "data": [[1, 10**6]]}, "n must be an integer"),
                             ({"columns": ["z"], "data": [[[0.5, 0.5]]]}, "z must be rows of 100")):
            status, body = post(url, {"dataframe_split": bad})
            assert status == 400 and message in body["message"], body
        status, _ = post(url, {"instances": "not a table"})
        assert 400 <= status < 500
