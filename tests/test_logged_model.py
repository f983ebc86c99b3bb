"""The generator as MLflow logs it (training/registry.py), file by file: what a cluster downloads."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow

from training import registry


def test_the_logged_model_holds_no_empty_file(tmp_path, tracking_to):
    """KServe's S3 downloader skips zero-byte objects: an empty file in the model (an empty __init__.py
    logged as code) would be missing on the cluster, and loading the model there would fail."""
    generator = keras.Sequential([keras.Input((100,)), keras.layers.Dense(784),
                                  keras.layers.Reshape((28, 28, 1))])
    generator.save(tmp_path / "generator.keras")
    tracking_to(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("files", artifact_location=(tmp_path / "store").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        model_id = registry.log_generator(tmp_path / "generator.keras")
    model = Path(mlflow.artifacts.download_artifacts(f"models:/{model_id}", dst_path=str(tmp_path / "model")))
    files = {str(path.relative_to(model)): path.stat().st_size for path in model.rglob("*") if path.is_file()}
    assert {"MLmodel", registry.GENERATOR_IN_MODEL, "code/training/__init__.py",
            "code/training/serving.py"} <= set(files)
    assert [name for name, size in files.items() if size == 0] == []
