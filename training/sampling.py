"""Draw digits from a generator: the latents a seed stands for, and a model loaded from any URI.

A generator is named by a local `.keras` file, a training run (`runs:/<run id>` or the bare id), or a
registered model (`models:/<name>@<alias>` or `models:/<name>/<version>`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np


def latents(n: int, z_dim: int, seed: int | tuple[int, ...]) -> np.ndarray:
    """z ~ U(-1, 1): (n, z_dim) float32, the same for the same seed everywhere (training's sample grids,
    the CLI, evaluation, serving)."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, z_dim)).astype(np.float32)


def latent_batches(n: int, z_dim: int, seed: int | tuple[int, ...], batch_size: int) -> Iterator[np.ndarray]:
    """latents(n, z_dim, seed) as consecutive (<= batch_size, z_dim) blocks of its rows: the same values,
    never all n at once."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        yield rng.uniform(-1, 1, (min(batch_size, n - start), z_dim)).astype(np.float32)


def render(generator: keras.Model, z: np.ndarray, weights: tuple[list, list] | None = None,
           batch_size: int = 1000) -> np.ndarray:
    """G(z) in inference mode, in batches: (n, z_dim) -> (n, 28, 28, 1) float32 in [-1, 1]. `weights`,
    (trainable, non-trainable) values such as a training state's, replace the model's own."""
    def g(z_batch):
        if weights is None:
            return generator(z_batch, training=False)
        return generator.stateless_call(*weights, keras.ops.convert_to_tensor(z_batch), training=False)[0]

    return np.concatenate([keras.ops.convert_to_numpy(keras.ops.cast(g(z[i:i + batch_size]), "float32"))
                           for i in range(0, len(z), batch_size)])


def generate(generator: keras.Model, n: int, seed: int = 0) -> np.ndarray:
    """n samples of G(z), z ~ U(-1, 1) drawn from `seed`: (n, 28, 28, 1) float32 in [-1, 1]."""
    return render(generator, latents(n, generator.input_shape[-1], seed))


def generator_path(uri: str) -> Path:
    """A local path to the generator's .keras file for any supported URI (downloads when remote); a
    registered model's file is checked against the sha256 recorded when it was registered."""
    import mlflow

    if uri.startswith("models:/"):
        from training.registry import recorded_checksum, verified_generator

        model_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
        return verified_generator(model_dir, recorded_checksum(model_dir))
    if uri.startswith("runs:/"):
        return _exported_generator(uri.removeprefix("runs:/").strip("/"))
    path = Path(uri)
    if (path / "generator.keras").is_file():  # a folder holding it, e.g. a Kubeflow Model artifact
        return path / "generator.keras"
    if path.suffix == ".keras":
        if not path.is_file():
            raise FileNotFoundError(f"generator {uri}: no such file")
        return path
    return _exported_generator(uri)


def _exported_generator(run_id: str) -> Path:
    """The generator a training run exports (averaged, best: its tag says), downloaded."""
    import mlflow

    from training.tracking import GENERATOR_ARTIFACT, GENERATOR_ARTIFACT_TAG

    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    artifact = tags.get(GENERATOR_ARTIFACT_TAG, GENERATOR_ARTIFACT)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact))


def load_generator(uri: str) -> keras.Model:
    """The Keras generator behind `uri`, loaded with safe_mode on (no code from the file runs)."""
    return keras.saving.load_model(generator_path(uri), safe_mode=True, compile=False)
