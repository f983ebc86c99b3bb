"""Adam (Kingma & Ba, 2015) as a pure function, identical on every Keras backend.

Matches `keras.optimizers.Adam` with its default beta_2 and epsilon (epsilon outside the square root,
bias correction folded into the step size; tests/test_adam.py holds it to Keras on both backends).
Written out because Keras' own `stateless_apply` is unavailable on TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras import ops


@dataclass(frozen=True)
class Adam:
    learning_rate: float
    beta_1: float
    beta_2: float = 0.999  # Keras' defaults; the seed's recipe sets only learning_rate and beta_1
    epsilon: float = 1e-7

    def init(self, params: list) -> dict[str, list]:
        """State for `params`: step count t, first moments m and second moments v (float32)."""
        zeros = [ops.zeros(ops.shape(p), "float32") for p in params]
        return {"t": [ops.zeros((), "float32")], "m": zeros, "v": [ops.copy(z) for z in zeros]}

    def apply(self, state: dict[str, list], grads: list, params: list) -> tuple[list, dict[str, list]]:
        """One update; returns (new params, new state)."""
        t = state["t"][0] + 1.0
        step_size = self.learning_rate * ops.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        new_params, new_m, new_v = [], [], []
        for p, g, m, v in zip(params, grads, state["m"], state["v"], strict=True):
            g = ops.cast(g, "float32")
            m = self.beta_1 * m + (1.0 - self.beta_1) * g
            v = self.beta_2 * v + (1.0 - self.beta_2) * ops.square(g)
            new_params.append(p - ops.cast(step_size * m / (ops.sqrt(v) + self.epsilon), p.dtype))
            new_m.append(m)
            new_v.append(v)
        return new_params, {"t": [t], "m": new_m, "v": new_v}
