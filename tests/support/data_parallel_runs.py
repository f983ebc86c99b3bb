"""Training on several devices, for test_data_parallel (a subprocess: the JAX backend, with 4 virtual CPU
devices).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 KERAS_BACKEND=jax \
        python tests/support/data_parallel_runs.py step MNIST.npz OUT.npz     # 1 step on 1 and on 4 devices
        python tests/support/data_parallel_runs.py resume MNIST.npz OUT.json  # 3 steps on 2, resumed on 1

`step` takes one compiled training step on 1 and on 4 devices, from the same seeded GAN of preset cpu and
the same real digits. OUT.npz holds, for each run in RUNS, the state's leaves before and after the step
("RUN_start_leaf_I", "RUN_leaf_I"), the step's metrics ("RUN_d_loss", ...), the number of devices the new
state is on ("RUN_devices"), whether it is replicated on them ("RUN_replicated") and the all-reduces in the
compiled step ("RUN_all_reduces").

`resume` trains preset cpu on 256 digits at batch 64 (4 steps an epoch) for 2 epochs, stopped after 3
steps on 2 devices, then resumed on 1 device to the end. OUT.json holds, for each part, its config, the
global step it ended at and that of the checkpoint it left, the steps its metrics were logged at, and the
`device` its MLflow params name.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from training import backend, checkpoint, data, loop, tracking
from training.config import TrainConfig

BATCH, IMAGES = 16, 256
# name: (devices, epoch whose first batch the step takes). "other_batch" is the step the test must tell
# apart from "one_device"; it reuses the 4-device compilation (a compilation costs seconds on 2 cores).
RUNS = {"one_device": (1, 0), "four_devices": (4, 0), "other_batch": (4, 1)}


def steps(devices: int, epochs: list[int], images: np.ndarray) -> dict[int, dict]:
    """From the seeded start, one step on the first batch of each epoch: epoch -> the arrays to save."""
    config = TrainConfig(preset="cpu", batch_size=BATCH, devices=devices)
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


def one_step_each(images: np.ndarray, out: str) -> None:
    by_devices = {devices: steps(devices, sorted({e for d, e in RUNS.values() if d == devices}), images)
                  for devices in sorted({d for d, _ in RUNS.values()})}
    np.savez(out, **{f"{run}_{key}": value for run, (devices, epoch) in RUNS.items()
                     for key, value in by_devices[devices][epoch].items()})


def resume(images: np.ndarray, out: str) -> None:
    with tempfile.TemporaryDirectory() as checkpoints:
        config = TrainConfig(preset="cpu", train_images=IMAGES, epochs=2, log_every=2,
                             max_steps=3, devices=2, checkpoint_dir=checkpoints)
        parts = {"two_devices": config, "resumed_on_one": config.replace(devices=1, max_steps=0, resume=True)}
        report = {}
        for part, part_config in parts.items():
            result = loop.train(part_config, images)
            manifest = checkpoint.latest_manifest(Path(checkpoints))
            report[part] = {"config": part_config.to_dict(), "global_step": result.global_step,
                            "checkpoint_step": manifest["global_step"],
                            "logged_at": [step for step, _ in result.history["d_loss"]],
                            "device": tracking.run_params(part_config)["device"]}
    Path(out).write_text(json.dumps(report))


def main(mode: str, mnist: str, out: str) -> None:
    images = data.to_unit_range(data.load_mnist(mnist).x_train[:IMAGES])
    {"step": one_step_each, "resume": resume}[mode](images, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
