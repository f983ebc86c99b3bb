"""The registered generator as an MLflow pyfunc model, logged as code (nothing in it is pickled).

Request: a table with columns `seed` and `n` (n images from each seed's latents), or a column `z` whose
rows are explicit latent vectors. Response: (N, 28, 28) uint8 images, 0 = black, 255 = white.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from training.config import SEED_MAX

MAX_IMAGES_PER_REQUEST = 10_000


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def latents_from_request(frame, z_dim: int) -> np.ndarray:
    """Turn a request table into (N, z_dim) latents, or raise a 400-class error saying what is wrong."""
    from training.sampling import latents

    if "z" in frame.columns and frame["z"].notna().any():
        try:
            z = np.stack([np.asarray(row, dtype=np.float32) for row in frame["z"]])
        except (TypeError, ValueError) as err:
            raise _bad_request(f"z must be rows of {z_dim} numbers ({err})") from None
        if z.ndim != 2 or z.shape[1] != z_dim or not np.isfinite(z).all():
            raise _bad_request(f"z must be rows of {z_dim} finite numbers, got shape {z.shape}")
        chunks = [z]
    else:
        if not {"seed", "n"} <= set(frame.columns):
            raise _bad_request("the request needs columns seed and n (or a column z)")
        chunks = []
        for seed, n in zip(frame["seed"], frame["n"]):
            if not (float(n).is_integer() and 1 <= n <= MAX_IMAGES_PER_REQUEST):
                raise _bad_request(f"n must be an integer in 1..{MAX_IMAGES_PER_REQUEST} (got {n})")
            if not (float(seed).is_integer() and 0 <= seed <= SEED_MAX):
                raise _bad_request(f"seed must be an integer in 0..{SEED_MAX} (got {seed})")
            chunks.append(latents(int(n), z_dim, int(seed)))
    total = sum(len(c) for c in chunks)
    if total > MAX_IMAGES_PER_REQUEST:
        raise _bad_request(f"at most {MAX_IMAGES_PER_REQUEST} images per request (asked for {total})")
    return np.concatenate(chunks)


class GeneratorModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from pathlib import Path

        import keras

        from training.registry import CHECKSUM_KEY, ArtifactError, check_checksum

        path = context.artifacts["generator"]
        try:
            check_checksum(Path(path), (context.model_config or {}).get(CHECKSUM_KEY))
        except ArtifactError as err:
            raise RuntimeError(f"{err}; refusing to serve a modified or corrupted model") from None
        self.generator = keras.saving.load_model(path, safe_mode=True, compile=False)
        self.z_dim = int(self.generator.input_shape[-1])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> np.ndarray:
        from training.plots import to_uint8
        from training.sampling import render

        return to_uint8(render(self.generator, latents_from_request(model_input, self.z_dim)))


mlflow.models.set_model(GeneratorModel())
