"""The suite's isolation: it runs in a random order each time (pytest-randomly), and a test that leaves
process-wide state changed for the tests after it fails, naming what, and the next test finds it put back."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

from tests.conftest import ROOT

LEAKY = "tests/support/leaky_tests.py"


def _pytest(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_test_that_leaves_process_state_changed_fails_naming_it_and_the_next_finds_it_put_back(tmp_path):
    report = tmp_path / "report.xml"
    done = _pytest(tmp_path, "-q", "-p", "no:randomly", f"--junitxml={report}", LEAKY)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        problems = [child.get("message", "") for child in case if child.tag in ("error", "failure")]
        outcomes[case.get("name")] = " ".join(problems) or "passed"
    expected = {
        "test_sets_an_environment_variable": "environment variables added: MNIST_GAN_LEAKED",
        "test_changes_the_working_directory": "working directory:",
        "test_points_mlflow_at_another_store": "MLflow tracking URI (mlflow.set_tracking_uri): None before",
        "test_sets_the_registry_uri": "MLflow registry URI: None before",
        "test_leaves_a_run_active": "MLflow active run (mlflow.start_run): None before",
        "test_turns_on_mixed_precision": "Keras dtype policy: 'float32' before, 'mixed_float16' after",
        "test_uses_a_fixture_of_wider_scope_that_leaks":
            "a fixture of wider scope than this test (module, session) left process-wide state changed, "
            "now put back: environment variables added: MNIST_GAN_LEAKED_BY_A_FIXTURE",
    }
    for name, said in expected.items():
        assert said in outcomes.get(name, ""), (name, outcomes.get(name), done.stdout[-3000:])
    assert "left process-wide state changed" in outcomes["test_points_mlflow_at_another_store"]
    assert outcomes["test_changes_all_of_it_through_fixtures_that_put_it_back"] == "passed", outcomes
    assert outcomes["test_finds_everything_as_it_was"] == "passed", outcomes
    assert done.returncode == 1


def test_the_suite_runs_in_a_random_order_unless_told_not_to(tmp_path):
    def order(*args: str) -> list[str]:
        done = _pytest(tmp_path, "--collect-only", "-q", *args, "tests/test_config.py")
        assert done.returncode == 0, done.stdout + done.stderr
        return [line for line in done.stdout.splitlines() if "::" in line]

    in_file_order = order("-p", "no:randomly")
    assert order("-p", "randomly", "--randomly-seed=1") != in_file_order
    assert order("--randomly-seed=2") != in_file_order, "pytest-randomly is on by default"
    assert sorted(order("--randomly-seed=2")) == sorted(in_file_order)
