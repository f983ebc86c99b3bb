"""Run the hand-written Adam and `keras.optimizers.Adam` side by side on the backend KERAS_BACKEND names
(a subprocess of test_adam).

    python tests/support/adam_steps.py OUT.npz

OUT.npz holds, for each case in CASES, the parameters after every step from Keras ("keras"), from
training/adam.py ("hand"), and from training/adam.py with epsilon ten times too large ("wrong", which the
test must tell apart from Keras), all from the same seeded start ("start_I") and gradients.
"""

from __future__ import annotations

import dataclasses
import sys

import keras
import numpy as np

from training.adam import Adam

# (learning_rate, beta_1): the seed's recipe, and Keras' default beta_1 at ten times its default rate.
CASES = {"seed_recipe": (2e-4, 0.5), "keras_like": (1e-2, 0.9)}
STEPS = 5
# One tensor per gradient scale: at 1e-6, sqrt(v) is near epsilon, so epsilon's value and placement matter.
SHAPES_AND_GRAD_SCALES = [((4, 3), 1.0), ((7,), 1e-3), ((2, 3, 5), 1e-6)]


def keras_trajectory(learning_rate: float, beta_1: float, start: list[np.ndarray],
                     grads: list[list[np.ndarray]]) -> list[list]:
    # beta_2 and epsilon written out, not taken from training/adam.py, so that its defaults are tested too.
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=beta_1, beta_2=0.999, epsilon=1e-7)
    variables = [keras.Variable(p) for p in start]
    trajectory = []
    for step_grads in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
        trajectory.append([keras.ops.convert_to_numpy(v) for v in variables])
    return trajectory


def hand_trajectory(adam: Adam, start: list[np.ndarray], grads: list[list[np.ndarray]]) -> list[list]:
    params = [keras.ops.convert_to_tensor(p) for p in start]
    state = adam.init(params)
    trajectory = []
    for step_grads in grads:
        params, state = adam.apply(state, [keras.ops.convert_to_tensor(g) for g in step_grads], params)
        trajectory.append([keras.ops.convert_to_numpy(p) for p in params])
    return trajectory


def main(out: str) -> None:
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(shape).astype("float32") for shape, _ in SHAPES_AND_GRAD_SCALES]
    grads = [[(scale * rng.standard_normal(shape)).astype("float32")
              for shape, scale in SHAPES_AND_GRAD_SCALES] for _ in range(STEPS)]
    arrays = {f"start_{i}": p for i, p in enumerate(start)}
    for case, (learning_rate, beta_1) in CASES.items():
        adam = Adam(learning_rate, beta_1)  # as training builds it: beta_2 and epsilon left at their defaults
        runs = {"keras": keras_trajectory(learning_rate, beta_1, start, grads),
                "hand": hand_trajectory(adam, start, grads),
                "wrong": hand_trajectory(dataclasses.replace(adam, epsilon=10 * adam.epsilon), start, grads)}
        for run, trajectory in runs.items():
            for step, params in enumerate(trajectory):
                arrays.update({f"{case}_{run}_{step}_{i}": p for i, p in enumerate(params)})
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
