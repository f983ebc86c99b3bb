"""Tests that each leave one piece of process-wide state changed, and some that change it the right way,
for tests/test_isolation.py to run in a pytest of their own, in this order (-p no:randomly). Not part of
the suite: their file name does not start with test_."""

from __future__ import annotations

import os

import pytest

STARTED_IN = os.getcwd()


def test_sets_an_environment_variable():
    os.environ["MNIST_GAN_LEAKED"] = "1"


def test_changes_the_working_directory(tmp_path):
    os.chdir(tmp_path)


def test_points_mlflow_at_another_store(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_sets_the_registry_uri(tmp_path):
    import mlflow

    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'registry.db'}")


def test_leaves_a_run_active(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.start_run()


def test_turns_on_mixed_precision():
    import keras

    keras.config.set_dtype_policy("mixed_float16")


@pytest.fixture(scope="module")
def leaky_module_fixture():
    os.environ["MNIST_GAN_LEAKED_BY_A_FIXTURE"] = "1"
    return "leaked"


def test_uses_a_fixture_of_wider_scope_that_leaks(leaky_module_fixture):
    pass


def test_changes_all_of_it_through_fixtures_that_put_it_back(tmp_path, monkeypatch, tracking_to):
    import mlflow

    monkeypatch.setenv("MNIST_GAN_SET_BY_MONKEYPATCH", "1")
    monkeypatch.chdir(tmp_path)
    tracking_to(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("kept")
    mlflow.start_run()


def test_finds_everything_as_it_was():
    import keras
    import mlflow
    from mlflow.tracking._model_registry import utils as registry

    leaked = {"MNIST_GAN_LEAKED", "MNIST_GAN_LEAKED_BY_A_FIXTURE", "MNIST_GAN_SET_BY_MONKEYPATCH",
              "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID"}
    assert not leaked & set(os.environ) and os.getcwd() == STARTED_IN
    assert mlflow.active_run() is None and registry._registry_uri is None
    assert keras.config.dtype_policy().name == "float32"
