"""The seed's GAN update as a pure function of (state, inputs), written once for every Keras backend.

One training step = n_iter_d discriminator updates, then n_iter_g generator updates:

    D step:  x = [real; G(z)],  y = [real_label; fake_label],  minimise BCE(y, D(x)) over D's weights
    G step:  minimise BCE(1, D(G(z))) over G's weights, D frozen (the non-saturating generator loss)

with z ~ U(-1, 1). The fakes of a D step come from G in inference mode, as the post's `G.predict`.
With `ema_decay` > 0 the step then moves an average of G's weights towards the new ones (training.ema):
the generator that gets sampled, evaluated and served; training itself never reads it.
Only `value_and_grad` and `compile_step` (in `training.backend`) differ between TensorFlow and JAX;
over several devices (`backend.DataParallel`) the step marks where its batch splits, and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import ops

from training import backend, ema
from training.adam import Adam

GENERATOR_LABEL = 1.0  # G is trained to make D answer "real" (the non-saturating loss)


@dataclass(frozen=True)
class Recipe:
    """The step's knobs; their values and defaults are TrainConfig's."""

    n_iter_d: int
    n_iter_g: int
    real_label: float
    fake_label: float
    ema_decay: float = 0.0  # 0: no average of G's weights in the state


def binary_crossentropy(target: float, probability):
    """Mean BCE of probabilities (B, 1) in [0, 1] against one constant target, in float32."""
    p = ops.clip(ops.cast(probability, "float32"), 1e-7, 1.0 - 1e-7)
    return -ops.mean(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p))


class LatentSampler:
    """z ~ U(-1, 1) of shape (..., z_dim), drawn statelessly from a seed-generator state."""

    def __init__(self, z_dim: int, seed: int):
        self.z_dim = z_dim
        self.seed_generator = keras.random.SeedGenerator(seed)

    def sample(self, seed_state, shape: tuple[int, ...]):
        with keras.StatelessScope(state_mapping=[(self.seed_generator.state, seed_state)]) as scope:
            z = keras.random.uniform((*shape, self.z_dim), -1.0, 1.0, seed=self.seed_generator)
            return z, scope.get_current_value(self.seed_generator.state)


class Gan:
    """Holds G, D, the optimizer rule and the recipe; the state itself travels as a dict of tensors."""

    def __init__(self, generator, discriminator, optimizer: Adam, sampler, recipe: Recipe,
                 parallel: backend.DataParallel | None = None):
        self.generator, self.discriminator = generator, discriminator
        self.optimizer, self.sampler, self.recipe = optimizer, sampler, recipe
        self.parallel = parallel or backend.DataParallel()

    def variables(self) -> dict[str, list]:
        """The Keras variables behind the model part of the state."""
        return {
            "g_trainable": self.generator.trainable_variables,
            "g_non_trainable": self.generator.non_trainable_variables,
            "d_trainable": self.discriminator.trainable_variables,
            "d_non_trainable": self.discriminator.non_trainable_variables,
            "noise": [self.sampler.seed_generator.state],
        }

    def initial_state(self) -> dict:
        """The models' current weights, fresh optimizer moments and the noise seed, as tensors."""
        state = {k: [ops.convert_to_tensor(v.numpy()) for v in vs] for k, vs in self.variables().items()}
        state["g_optimizer"] = self.optimizer.init(state["g_trainable"])
        state["d_optimizer"] = self.optimizer.init(state["d_trainable"])
        if self.recipe.ema_decay:
            state["g_ema"] = ema.init(state["g_trainable"], state["g_non_trainable"])
        return state

    def generator_weights(self, state, averaged: bool = True) -> tuple[list, list]:
        """G's (trainable, non-trainable) weights in a state: the moving average when the state holds
        one and `averaged`, else the raw weights training updates."""
        raw = (state["g_trainable"], state["g_non_trainable"])
        return ema.weights(state["g_ema"], raw) if averaged and "g_ema" in state else raw

    def assign(self, state: dict) -> None:
        """Write a state's weights back into the Keras models (before saving or sampling)."""
        for key, variables in self.variables().items():
            for variable, value in zip(variables, state[key], strict=True):
                variable.assign(value)

    def discriminator_update(self, state, real, z):
        """One D step on [real; G(z)]. real: (B, 28, 28, 1) in [-1, 1]; z: (B, z_dim)."""
        fake, _ = self.generator.stateless_call(
            state["g_trainable"], state["g_non_trainable"], z, training=False)
        images = ops.concatenate([ops.cast(real, fake.dtype), fake], axis=0)
        batch = ops.shape(real)[0]

        def loss_fn(d_trainable):
            p, d_non_trainable = self.discriminator.stateless_call(
                d_trainable, state["d_non_trainable"], images, training=True)
            loss = 0.5 * (binary_crossentropy(self.recipe.real_label, p[:batch])
                          + binary_crossentropy(self.recipe.fake_label, p[batch:]))
            return loss, (p, d_non_trainable)

        (loss, (p, d_non_trainable)), grads = backend.value_and_grad(loss_fn)(state["d_trainable"])
        d_trainable, d_optimizer = self.optimizer.apply(state["d_optimizer"], grads, state["d_trainable"])
        state = {**state, "d_trainable": d_trainable, "d_non_trainable": d_non_trainable,
                 "d_optimizer": d_optimizer}
        p_real, p_fake = p[:batch], p[batch:]
        accuracy = 0.5 * (ops.mean(ops.cast(p_real > 0.5, "float32"))
                          + ops.mean(ops.cast(p_fake <= 0.5, "float32")))
        return state, {"d_loss": loss, "d_accuracy": accuracy,
                       "d_real": ops.mean(p_real), "d_fake": ops.mean(p_fake)}

    def generator_update(self, state, z):
        """One G step through the frozen D. z: (B, z_dim)."""

        def loss_fn(g_trainable):
            fake, g_non_trainable = self.generator.stateless_call(
                g_trainable, state["g_non_trainable"], z, training=True)
            p, d_non_trainable = self.discriminator.stateless_call(
                state["d_trainable"], state["d_non_trainable"], fake, training=True)
            loss = binary_crossentropy(GENERATOR_LABEL, p)
            return loss, (g_non_trainable, d_non_trainable)

        (loss, (g_non_trainable, d_non_trainable)), grads = backend.value_and_grad(loss_fn)(
            state["g_trainable"])
        g_trainable, g_optimizer = self.optimizer.apply(state["g_optimizer"], grads, state["g_trainable"])
        state = {**state, "g_trainable": g_trainable, "g_non_trainable": g_non_trainable,
                 "d_non_trainable": d_non_trainable, "g_optimizer": g_optimizer}
        return state, {"g_loss": loss}

    def update(self, state, real, z_d, z_g):
        """One training step with explicit inputs (what the backend-equivalence test drives).

        real: (n_iter_d, B, 28, 28, 1) in [-1, 1]; z_d: (n_iter_d, B, z_dim); z_g: (n_iter_g, B, z_dim).
        Returns the new state and the step's metrics, each averaged over its updates.
        """
        d_metrics, g_metrics = [], []
        for i in range(self.recipe.n_iter_d):
            state, metrics = self.discriminator_update(state, real[i], z_d[i])
            d_metrics.append(metrics)
        for i in range(self.recipe.n_iter_g):
            state, metrics = self.generator_update(state, z_g[i])
            g_metrics.append(metrics)
        if "g_ema" in state:
            state = {**state, "g_ema": ema.update(state["g_ema"], state["g_trainable"],
                                                  state["g_non_trainable"], self.recipe.ema_decay)}
        return state, _mean_metrics(d_metrics) | _mean_metrics(g_metrics)

    def train_step(self, state, images, batch_indices):
        """One training step on a device-resident dataset.

        images: (N, 28, 28, 1) in [-1, 1]; batch_indices: (n_iter_d, B) int32 rows of `images`. B is the
        global batch: with several devices, each computes on its share of it.
        """
        real = ops.take(images, batch_indices, axis=0)
        n_iter_d, batch = batch_indices.shape
        z_d, noise = self.sampler.sample(state["noise"][0], (n_iter_d, batch))
        z_g, noise = self.sampler.sample(noise, (self.recipe.n_iter_g, batch))
        real, z_d, z_g = self.parallel.split_batch((real, z_d, z_g))
        return self.update({**state, "noise": [noise]}, real, z_d, z_g)


def _mean_metrics(per_update: list[dict]) -> dict:
    return {name: ops.mean(ops.stack([m[name] for m in per_update])) for name in per_update[0]}
