"""What a finished training run holds in MLflow, wherever it was tracked."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np

from training.config import TrainConfig, names


def check_complete_run(client: mlflow.MlflowClient, run_id: str, tmp_path: Path, epochs: int) -> None:
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["preset"] == "cpu" and params["epochs"] == str(epochs)
    assert set(names(TrainConfig)) <= set(params)
    assert params["backend"] == "tensorflow" and params["compute_precision"] == "float32"
    assert params["accelerator"] == "cpu" and params["version_keras"] == keras.__version__
    assert len(params["data_sha256"]) == 64
    for name in ("d_loss", "g_loss", "d_accuracy", "d_real", "d_fake", "images_per_sec"):
        assert len(client.get_metric_history(run_id, name)) >= 2, name
        assert len(client.get_metric_history(run_id, f"epoch_{name}")) == epochs, name
    assert any(key.startswith("system/") for key in run.data.metrics), "system metrics are on"
    (dataset_input,) = run.inputs.dataset_inputs
    assert (dataset_input.dataset.name == "mnist"
            and dataset_input.dataset.digest == params["data_sha256"][:32])

    artifacts = Path(client.download_artifacts(run_id, "", str(tmp_path / "downloaded")))
    grids = sorted(p.name for p in (artifacts / "grids").iterdir())
    assert grids == [f"epoch_{e:04d}.png" for e in range(1, epochs + 1)]
    assert (artifacts / "samples.gif").read_bytes()[:6] == b"GIF89a"
    assert (artifacts / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (artifacts / "fid_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(client.get_metric_history(run_id, "curve/fid")) == 1, "the curve is scored at the end"
    for exported in ("generator_ema", "generator_best"):
        keras.saving.load_model(artifacts / "models" / f"{exported}.keras", safe_mode=True)
    generator = keras.saving.load_model(artifacts / "models" / "generator.keras", safe_mode=True)
    keras.saving.load_model(artifacts / "models" / "discriminator.keras", safe_mode=True)
    fake = keras.ops.convert_to_numpy(generator(np.zeros((3, 100), "float32"), training=False))
    assert fake.shape == (3, 28, 28, 1)
