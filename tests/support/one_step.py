"""Run one compiled training step on the backend KERAS_BACKEND names (a subprocess of test_step).

    python tests/support/one_step.py init OUT.npz         # seeded tiny GAN state and inputs
    python tests/support/one_step.py step IN.npz OUT.npz  # one Gan.update from them: new state and metrics
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from training import backend
from training.adam import Adam
from training.config import TrainConfig
from training.models import PRESET_WIDTHS, build_discriminator, build_generator
from training.step import Gan, LatentSampler, Recipe

# Dropout draws its masks from each backend's own RNG; without it, one step is a function of its inputs.
WIDTHS = PRESET_WIDTHS["tiny"].__class__(**{**PRESET_WIDTHS["tiny"].__dict__, "dropout": 0.0})
CONFIG = TrainConfig()
RECIPE = Recipe(CONFIG.n_iter_d, CONFIG.n_iter_g, CONFIG.real_label, CONFIG.fake_label, CONFIG.ema_decay)
BATCH, Z_DIM = 16, CONFIG.z_dim


def build() -> Gan:
    backend.make_deterministic(0)
    return Gan(build_generator(WIDTHS, Z_DIM), build_discriminator(WIDTHS),
               Adam(CONFIG.learning_rate, CONFIG.beta_1), LatentSampler(Z_DIM, seed=0), RECIPE)


def main(mode: str, *paths: str) -> None:
    gan = build()
    template = gan.initial_state()
    if mode == "init":
        rng = np.random.default_rng(1)
        leaves = [keras.ops.convert_to_numpy(x) for x in keras.tree.flatten(template)]
        inputs = {"real": rng.uniform(-1, 1, (RECIPE.n_iter_d, BATCH, 28, 28, 1)),
                  "z_d": rng.uniform(-1, 1, (RECIPE.n_iter_d, BATCH, Z_DIM)),
                  "z_g": rng.uniform(-1, 1, (RECIPE.n_iter_g, BATCH, Z_DIM))}
        np.savez(paths[0], *leaves, **{k: v.astype("float32") for k, v in inputs.items()})
        return
    with np.load(paths[0]) as saved:
        leaves = [saved[f"arr_{i}"] for i in range(len(keras.tree.flatten(template)))]
        real, z_d, z_g = saved["real"], saved["z_d"], saved["z_g"]
    state = keras.tree.pack_sequence_as(template, [keras.ops.convert_to_tensor(x) for x in leaves])
    new_state, metrics = backend.compile_step(gan.update)(state, real, z_d, z_g)
    new_leaves = [keras.ops.convert_to_numpy(x) for x in keras.tree.flatten(new_state)]
    np.savez(paths[1], *new_leaves, **{k: keras.ops.convert_to_numpy(v) for k, v in metrics.items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
