"""URL-bearing inputs (data source, generator, tracking and registry URIs, target registry, artifacts
destination): property tests that no credential or signature a URL carries, in any position (user,
password, signed-URL query parameters, fragment), reaches the console or a real sqlite MLflow store, and
that a bad or unreachable one is refused before work starts, in one line, exit 2."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from string import ascii_letters, digits

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from infra.local_stack import free_port
from tests.conftest import ROOT, cli_env, run_cli
from tests.support.file_server import serving
from training.redaction import redacted

# Query parameters that sign a URL (AWS SigV4 and SigV2, GCS, Azure SAS) or carry a token, as spelled.
SIGNING = ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "x-amz-security-token",
           "Signature", "AWSAccessKeyId", "X-Goog-Signature", "X-Goog-Credential", "GoogleAccessId", "sig",
           "token", "access_token", "api_key", "password"]
# Their neighbours, which say nothing secret and are kept.
PLAIN = ["X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Date=20261206T000000Z", "X-Amz-Expires=3600",
         "X-Amz-SignedHeaders=host", "sv=2022-11-02", "se=2026-12-07T00%3A00%3A00Z", "sp=r", "generation=7"]
MARK = "sEcReT"  # every secret starts so: found in a store or on a console, it can only be a leak
# A command per example: few of them, and a failing one reported as found (shrinking it would take
# longer than the whole test).
SLOW = settings(max_examples=4, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Carried:
    """What a URL carries besides its address and path: user:password@, query, fragment; and which of
    their values are secrets."""

    userinfo: str
    query: str
    fragment: str
    secrets: tuple[str, ...]
    plain: tuple[str, ...]

    def url(self, scheme: str, address: str, path: str = "/mnist.npz") -> str:
        return f"{scheme}://{self.userinfo}{address}{path}{self.query}{self.fragment}"

    def leaked(self, text: str) -> list[str]:
        """The secrets found in `text`, as given or as they are spelled in the URL."""
        return [s for s in self.secrets if s in text or _quoted(s) in text]


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _leaked(urls: list[Carried], text: str) -> list[str]:
    return [secret for carries in urls for secret in carries.leaked(text)]


secret_values = st.tuples(st.text(ascii_letters + digits, min_size=8, max_size=16),
                          st.text("@:/?#&=+% ", max_size=2)).map(lambda parts: MARK + "".join(parts))


@st.composite
def carried(draw) -> Carried:
    """Credentials and signatures in every position a URL has for them, at least one of them."""
    secrets: list[str] = []

    def secret() -> str:
        secrets.append(draw(secret_values))
        return _quoted(secrets[-1])

    form = draw(st.sampled_from(["", "{user}@", "{user}:{password}@", "alice:{password}@"]))
    userinfo = form.format(user=secret() if "{user}" in form else "",
                           password=secret() if "{password}" in form else "")
    names = draw(st.lists(st.sampled_from(SIGNING), max_size=3, unique=True))
    signing = [f"{name}={secret()}" for name in names]
    plain = draw(st.lists(st.sampled_from(PLAIN), max_size=3, unique=True))
    parameters = draw(st.permutations(signing + plain))
    query = "?" + "&".join(parameters) if parameters else ""
    fragment = f"#access_token={secret()}" if draw(st.booleans()) else ""
    if not secrets:
        userinfo = f"{secret()}@"
    return Carried(userinfo, query, fragment, tuple(secrets), tuple(plain))


# ---- the rule itself ----

@settings(max_examples=300, deadline=None)
@given(carries=carried(), scheme=st.sampled_from(["http", "https", "s3", "postgresql+psycopg", "mysql"]),
       address=st.sampled_from(["127.0.0.1:5000", "mlflow.mnist-gan.svc", "[::1]:9000", "bucket"]),
       path=st.sampled_from(["", "/", "/data/mnist.npz", "/api/2.0/mlflow/runs/get", "/a@b/c"]),
       around=st.sampled_from(["{}", "error: {}: download failed ({})", "'{}'", "<{}>", "({}).", "{},{}",
                                  "http://proxy/?next={}"]))
def test_no_secret_of_a_url_survives_redaction_wherever_it_sits(carries, scheme, address, path, around):
    text = around.format(*[carries.url(scheme, address, path)] * around.count("{}"))
    shown = redacted(text)
    assert carries.leaked(shown) == [], shown
    assert f"{scheme}://{address}{path}" in shown, "the address and path stay, to say where"
    assert all(parameter in shown for parameter in carries.plain), "what is not secret stays"


@settings(max_examples=200, deadline=None)
@given(text=st.sampled_from([
    "sqlite:///mlflow.db", "sqlite:////abs/path/mlflow.db?timeout=5", "models:/mnist-gan-generator@champion",
    "runs:/0123abc/models/generator.keras", "mlflow-artifacts:/1/models/m-1/artifacts", "s3://bucket/key.npz",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz", "postgresql://db:5432/mlflow",
    "http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning", "checkpoints/run 1: 3 steps",
    "file:///tmp/x.npz?generation=7&sp=r", "no URL here: user:password@host (not a URL)"]),
    prefix=st.text(" :(,'\"abc", max_size=3), suffix=st.text(" .,:;)'\"abc", max_size=3))
def test_text_without_secrets_is_left_as_it_was(text, prefix, suffix):
    assert redacted(prefix + text + suffix) == prefix + text + suffix


# ---- the console and the store of each command that takes a URL ----

@pytest.fixture(scope="module")
def serving_mnist(mnist_path):
    """A real HTTP server on 127.0.0.1 that serves the real MNIST at /mnist.npz (any query, any
    credentials) and answers 404 to anything else (its address)."""
    def refusal(request):
        return None if urllib.parse.urlsplit(request.path).path == "/mnist.npz" else 404

    with serving(mnist_path.read_bytes(), refusal) as address:
        yield address


def _closed_port_address() -> str:
    return f"127.0.0.1:{free_port()}"


# Each position a user gives a URL in: the URL's scheme and path, and the command (an MLFLOW_ position is
# that variable, around a command that reaches its check). Each is refused before work starts, by a
# pre-flight check or the job's first step. (promote reads its data only for a head-to-head: its
# pre-flight refuses a bad scheme.)
URL, MNIST = "<url>", "<mnist>"
POSITIONS = {
    "main --data": ("http", "/missing.npz", ["main", "--data", URL, "--preset", "tiny"]),
    "evaluate --data": ("https", "/missing.npz", ["evaluate", "--generator", "g.keras", "--data", URL]),
    "evaluate --generator": ("https", "/g.keras", ["evaluate", "--generator", URL, "--data", MNIST]),
    "promote --to-registry-uri": ("http", "", ["promote", "--to-registry-uri", URL]),
    "promote --data": ("ftp", "/mnist.npz", ["promote", "--data", URL]),
    "deploy --artifacts-destination": ("s3", "/mlflow", ["deploy", "--inference-service", "mnist-gan",
                                                         "--artifacts-destination", URL]),
    "MLFLOW_TRACKING_URI": ("http", "", ["evaluate", "--generator", "g.keras", "--data", MNIST]),
    "MLFLOW_REGISTRY_URI": ("http", "", ["evaluate", "--generator", "g.keras", "--data", MNIST]),
}


def _store_text(store: Path) -> bytes:
    """Everything a sqlite store holds, its journal included."""
    return b"".join(p.read_bytes() for p in store.parent.glob(f"{store.name}*"))


@pytest.mark.parametrize("position", POSITIONS)
@SLOW
@given(carries=carried(), answering=st.booleans())
def test_a_url_with_secrets_is_refused_in_one_line_and_shown_and_stored_without_them(
        position, carries, answering, tmp_path, mnist_path, serving_mnist):
    scheme, path, command = POSITIONS[position]
    address = "bucket" if scheme == "s3" else serving_mnist if answering else _closed_port_address()
    url = carries.url(scheme, address, path)
    args = [{URL: url, MNIST: str(mnist_path)}.get(arg, arg) for arg in command]
    env = {position: url} if position.startswith("MLFLOW_") else {}
    here = tmp_path / uuid.uuid4().hex
    here.mkdir()
    done = run_cli(args, here, timeout=120, MNIST_GAN_CACHE=str(here / "cache"), **env)
    said = done.stdout + done.stderr
    assert done.returncode == 2, said[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in said, said[-3000:]
    assert carries.leaked(said) == [], said
    store = here / "mlflow.db"
    assert not store.exists() or carries.leaked(_store_text(store).decode(errors="replace")) == []


def test_promote_to_an_unreachable_registry_fails_in_one_line_within_seconds_without_its_password(tmp_path):
    address = _closed_port_address()
    started = time.monotonic()
    done = run_cli(["promote", "--to-registry-uri", f"http://user:s3cret-Hq7@{address}"], tmp_path,
                   timeout=60)
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip() == (f"mnist-gan promote: error: MLflow registry server http://{address} is "
                                   "unreachable ([Errno 111] Connection refused); start it or correct "
                                   "to_registry_uri")
    assert "s3cret-Hq7" not in done.stdout + done.stderr and took < 30, took  # retrying took minutes


def test_a_tracking_server_whose_uri_carries_credentials_is_found_where_it_answers(tmp_path, mnist_path,
                                                                                   serving_mnist):
    """Asked at its address: urllib would take user:password@ for part of the host and call it
    unreachable."""
    done = run_cli(["evaluate", "--generator", "missing.keras", "--data", str(mnist_path)], tmp_path,
                   timeout=300, MLFLOW_TRACKING_URI=f"http://alice:s3cret-Hq7@{serving_mnist}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip() == "mnist-gan evaluate: error: generator missing.keras: no such file"


def test_a_data_urls_credentials_are_sent_as_basic_auth_and_never_shown(tmp_path, mnist_path):
    """urllib alone would take user:password@ for part of the host name."""
    body, asked = mnist_path.read_bytes(), []

    def refusal(request):
        asked.append(request.headers.get("Authorization"))
        return None if asked[-1] == "Basic " + base64.b64encode(b"al:ce:s3cret/Hq7").decode() else 401

    with serving(body, refusal) as address:
        url = f"http://al%3Ace:s3cret%2FHq7@{address}/mnist.npz"
        done = run_cli(["data", "download", "--data", url, "--to", str(tmp_path / "copy.npz")], tmp_path,
                       timeout=120, MNIST_GAN_CACHE=str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "copy.npz").read_bytes() == body and len(asked) == 1
    assert f"data: http://{address}/mnist.npz checked" in done.stdout
    assert "s3cret" not in done.stdout + done.stderr


LIBRARY_LOG = r"""
import logging, sys
from training import console
with console.quiet(verbose=False):  # as every command runs
    logging.getLogger("urllib3.connectionpool").warning("Retrying after connection broken: %s", sys.argv[1])
"""


@settings(SLOW, max_examples=3)
@given(carries=carried())
def test_a_librarys_log_line_quoting_a_url_reaches_the_console_without_its_secrets(carries):
    url = carries.url("http", "127.0.0.1:5000", "/api/2.0/mlflow/runs/get")
    done = subprocess.run([sys.executable, "-c", LIBRARY_LOG, url], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stderr == f"Retrying after connection broken: {redacted(url)}\n"


# ---- what a job records when its data step runs: a real sqlite store ----

RECORD = """
import json, sys
from training import tracking
from training.config import TrainConfig
from training.data import DataError

for url in json.loads(sys.argv[1]):
    config = TrainConfig(data=url, preset="tiny")
    try:
        with tracking.start_job_run("main", config) as (parent, mnist):
            with tracking.start_run("train", parent):
                tracking.log_start(config, mnist, 64, resumed=False)
                raise OSError(f"connection to {url} lost")  # as a library's error quotes the URL
    except DataError as err:
        print("refused:", err)
    except OSError:
        print("lost")
"""


@settings(SLOW, max_examples=2)
@given(urls=st.lists(carried(), min_size=2, max_size=3))
def test_a_failing_job_records_no_secret_in_params_tags_datasets_or_notes(urls, tmp_path, serving_mnist):
    import mlflow

    here = tmp_path / uuid.uuid4().hex
    here.mkdir()
    served = [carries.url("http", serving_mnist, "/mnist.npz") for carries in urls]
    missing = [carries.url("http", serving_mnist, "/missing.npz") for carries in urls]
    done = subprocess.run([sys.executable, "-c", RECORD, json.dumps(served + missing)], cwd=here,
                          env=cli_env(here, MNIST_GAN_CACHE=str(here / "cache")), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("refused:") == done.stdout.count("lost") == len(missing), done.stdout
    store = here / "mlflow.db"
    assert _leaked(urls, _store_text(store).decode(errors="replace")) == []
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("mnist-gan").experiment_id], max_results=1000)
    recorded = json.dumps([[r.data.params, r.data.tags, [d.dataset.source for d in r.inputs.dataset_inputs]]
                           for r in runs])
    assert _leaked(urls, recorded) == [], recorded
    failed = [r for r in runs if r.info.status == "FAILED"]
    assert len(failed) == 2 * len(served + missing), "main and the step that failed: prepare-data or train"
    assert {r.data.tags["error"] for r in failed} == {
        *(f"DataError: {redacted(url)}: download failed (HTTP Error 404: Not Found)" for url in missing),
        *(f"OSError: connection to {redacted(url)} lost" for url in served)}
    assert all(r.data.tags["mlflow.note.content"].startswith("**main failed**") for r in failed
               if r.info.run_name == "main")
    assert sorted(r.data.params["data"] for r in runs if r.info.run_name == "train") == sorted(
        redacted(url) for url in served)
    # one dataset per digest in an experiment (MLflow's), its source as the first run gave it
    sources = {json.loads(d.dataset.source)["url"] for r in runs for d in r.inputs.dataset_inputs}
    assert sources and all(s.startswith(f"http://{serving_mnist}/mnist.npz") for s in sources), sources
