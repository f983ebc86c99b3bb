"""MNIST pixels to the generator's range, and the order in which an epoch visits them."""

from __future__ import annotations

import math

import numpy as np


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 in [0, 255] -> (N, 28, 28, 1) float32 in [-1, 1], as (x - 127.5) / 127.5."""
    return ((images.astype(np.float32) - 127.5) / 127.5)[..., np.newaxis]


def steps_per_epoch(num_images: int, batch_size: int, n_iter_d: int) -> int:
    """Training steps for one pass of every image through D (each step takes n_iter_d batches)."""
    return math.ceil(num_images / (batch_size * n_iter_d))


def epoch_batches(num_images: int, batch_size: int, n_iter_d: int, seed: int, epoch: int) -> np.ndarray:
    """Row indices for every step of one epoch: (steps, n_iter_d, batch_size) int32.

    A fresh permutation per (seed, epoch), so a resumed run visits the same batches; the last step is
    filled by wrapping around the permutation, so every batch has the same shape (one compilation).
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_images)
    steps = steps_per_epoch(num_images, batch_size, n_iter_d)
    return np.resize(order, steps * n_iter_d * batch_size).astype(np.int32).reshape(
        steps, n_iter_d, batch_size)
