"""training/adam.py's hand-written Adam takes the same steps as keras.optimizers.Adam, on TensorFlow and JAX.

For each backend (a subprocess, as KERAS_BACKEND is fixed per process), tests/support/adam_steps.py runs both
optimizers for 5 steps from the same seeded float32 parameters of three shapes with the same seeded
gradients, at the seed's recipe (lr 2e-4, beta_1 0.5) and at lr 1e-2, beta_1 0.9; the parameters must agree
after every step. Keras is given beta_2=0.999 and epsilon=1e-7 explicitly, while training/adam.py is built as
training builds it (defaults), so its defaults are held to Keras' too. The comparison is shown to be able to
fail: every parameter moves, and the same Adam with epsilon ten times too large is told apart from Keras.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, cli_env

CASES, STEPS, TENSORS = ("seed_recipe", "keras_like"), 5, 3
# Measured: at most 1 float32 ulp apart (relative 1.1e-7), from Keras writing m += (g - m) * (1 - beta_1)
# where adam.py writes beta_1 * m + (1 - beta_1) * g. rtol 1e-6 allows about 8 ulps; the wrong epsilon is
# 170+ ulps off even where gradients are of order 1, and 1e4+ ulps off where they are of order 1e-6.
RTOL, ATOL = 1e-6, 1e-9


def _trajectory(saved, case: str, run: str) -> list[list[np.ndarray]]:
    """The parameters after each step: trajectory[step][tensor]."""
    return [[saved[f"{case}_{run}_{step}_{i}"] for i in range(TENSORS)] for step in range(STEPS)]


def _agrees(run: list[list[np.ndarray]], reference: list[list[np.ndarray]]) -> bool:
    return all(np.allclose(p, q, rtol=RTOL, atol=ATOL) for ps, qs in zip(run, reference, strict=True)
               for p, q in zip(ps, qs, strict=True))


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_hand_written_adam_matches_keras_adam(backend, tmp_path):
    out = tmp_path / "steps.npz"
    subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "adam_steps.py"), str(out)], check=True,
                   env=cli_env(tmp_path, backend=backend), timeout=300, cwd=tmp_path)
    with np.load(out) as saved:
        start = [saved[f"start_{i}"] for i in range(TENSORS)]
        for case in CASES:
            keras_adam, hand, wrong = (_trajectory(saved, case, run) for run in ("keras", "hand", "wrong"))
            for step in range(STEPS):
                for i in range(TENSORS):
                    np.testing.assert_allclose(hand[step][i], keras_adam[step][i], rtol=RTOL, atol=ATOL,
                                               err_msg=f"{backend} {case}: step {step + 1}, tensor {i}")
            for i in range(TENSORS):
                assert np.all(hand[-1][i] != start[i]), f"{case}: tensor {i} did not move: nothing compared"
            assert not _agrees(wrong, keras_adam), f"{case}: epsilon 10x too large passed as Keras' Adam"
