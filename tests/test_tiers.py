"""The test tiers themselves: tests that share an expensive fixture run in one worker process, and every
test that trains or starts a server is marked out of `make check`."""

from __future__ import annotations

import subprocess
import sys

import pytest

# fixture -> the xdist group whose one worker builds it once
SHARED = {"lab": "lab", "main_job": "main_job", "mnist_less_one": "sweep", "mlflow_ui": "mlflow_ui"}


def _marks(item: pytest.Item, name: str) -> list[pytest.Mark]:
    return list(item.iter_markers(name))


def test_tests_of_a_shared_fixture_are_grouped_and_marked_slow(request):
    for item in request.session.items:
        for fixture, group in SHARED.items():
            if fixture in getattr(item, "fixturenames", ()):
                groups = [m.args[0] if m.args else m.kwargs.get("name") for m in _marks(item, "xdist_group")]
                assert groups == [group], f"{item.nodeid} uses {fixture}: mark it xdist_group({group!r})"
                assert _marks(item, "slow"), f"{item.nodeid} uses {fixture}: mark it slow"


def test_a_group_runs_in_one_worker(tmp_path):
    """What the installed pytest and pytest-xdist do with --dist loadgroup (pytest 9.2 broke it)."""
    (tmp_path / "test_grouped.py").write_text(
        "import os, pathlib, pytest\n"
        "def pid(name): pathlib.Path(__file__).with_name(name).write_text(str(os.getpid()))\n"
        "@pytest.mark.xdist_group('g')\ndef test_a(): pid('a.pid')\n"
        "@pytest.mark.xdist_group('g')\ndef test_b(): pid('b.pid')\n"
        "def test_c(): pid('c.pid')\ndef test_d(): pid('d.pid')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    pids = {name: (tmp_path / f"{name}.pid").read_text() for name in "abcd"}
    assert pids["a"] == pids["b"], pids
