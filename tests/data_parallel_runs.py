"""One compiled training step on 1 and on 4 devices, from the same seeded tiny GAN and the same real digits
(a subprocess of test_data_parallel, on the JAX backend with 4 virtual CPU devices).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 KERAS_BACKEND=jax \
        python tests/data_parallel_steps.py MNIST.npz OUT.npz

OUT.npz holds, for each run in RUNS, the state's leaves before and after the step ("RUN_start_leaf_I",
"RUN_leaf_I"), the step's metrics ("RUN_d_loss", ...), the number of devices the new state is on
("RUN_devices"), whether it is replicated on them ("RUN_replicated") and the all-reduces in the compiled
step ("RUN_all_reduces").
"""

from __future__ import annotations

import sys

import keras
import numpy as np

from training import backend, data, loop
from training.config import TrainConfig

BATCH, IMAGES = 16, 256
# name: (devices, epoch whose first batch the step takes). "other_batch" is the step the test must tell
# apart from "one_device"; it reuses the 4-device compilation (a compilation costs seconds on 2 cores).
RUNS = {"one_device": (1, 0), "four_devices": (4, 0), "other_batch": (4, 1)}


def steps(devices: int, epochs: list[int], images: np.ndarray) -> dict[int, dict]:
    """From the seeded start, one step on the first batch of each epoch: epoch -> the arrays to save."""
    config = TrainConfig(preset="tiny", batch_size=BATCH, devices=devices)
    gan = loop.build_gan(config)
    start = backend.to_numpy(keras.tree.flatten(gan.initial_state()))
    device_images = gan.parallel.replicate(keras.ops.convert_to_tensor(images))
    batches = {epoch: data.epoch_batches(len(images), BATCH, config.n_iter_d, config.seed, epoch)[0]
               for epoch in epochs}
    step = None
    saved = {}
    for epoch, batch_indices in batches.items():
        state = gan.parallel.replicate(gan.initial_state())  # a fresh copy: the step donates its state
        step = step or backend.compile_step(gan.train_step, gan.parallel).lower(
            state, device_images, batch_indices).compile()
        state, metrics = step(state, device_images, batch_indices)
        leaves = keras.tree.flatten(state)
        saved[epoch] = {
            **{f"start_leaf_{i}": x for i, x in enumerate(start)},
            **{f"leaf_{i}": x for i, x in enumerate(backend.to_numpy(leaves))},
            **backend.to_numpy(metrics),
            "devices": min(len(x.sharding.device_set) for x in leaves),
            "replicated": all(x.sharding.is_fully_replicated for x in leaves),
            "all_reduces": step.as_text().count(" all-reduce("),
        }
    return saved


def main(mnist: str, out: str) -> None:
    images = data.to_unit_range(data.load_mnist(mnist).x_train[:IMAGES])
    by_devices = {devices: steps(devices, sorted({e for d, e in RUNS.values() if d == devices}), images)
                  for devices in sorted({d for d, _ in RUNS.values()})}
    np.savez(out, **{f"{run}_{key}": value for run, (devices, epoch) in RUNS.items()
                     for key, value in by_devices[devices][epoch].items()})


if __name__ == "__main__":
    main(*sys.argv[1:])
