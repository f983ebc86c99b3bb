"""Step time of data-parallel training on 1, 2, 4 ... devices at the same global batch.

Each device count gets its own compiled step (`benchmarks.throughput.project_steps`, the state and the
dataset replicated, the batch split); after a warm-up step each, they run in alternating rounds and the
median seconds per step is kept. On a CPU the devices are virtual (XLA_FLAGS, set before JAX starts) and
share the same cores, so this proves the path rather than a speed-up.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 KERAS_BACKEND=jax \\
        python -m benchmarks.data_parallel --data ~/data/mnist.npz --preset tiny --devices 1,2,4

Imports neither TensorFlow (on the JAX backend) nor MLflow, so the GPU check runs it too.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from benchmarks.throughput import interleaved, project_steps
from training import backend, data
from training.config import TrainConfig


def usable_counts(available: int, batch: int) -> list[int]:
    """The device counts worth timing: powers of two up to `available`, and `available` itself, each
    dividing the batch."""
    counts = {c for c in (1, 2, 4, 8, 16, 32, 64) if c <= available} | {available}
    return sorted(c for c in counts if batch % c == 0)


def compare(config: TrainConfig, images: np.ndarray, counts: list[int], rounds: int,
            steps: int) -> list[dict]:
    """One row per device count (1 among them): seconds per step, real images per second, and the
    speed-up over 1 device."""
    runners = {count: project_steps(config.replace(devices=count), images)[0] for count in counts}
    times = interleaved(runners, rounds, steps)
    single = float(np.median(times[1]))
    rows = []
    for count, seconds in times.items():
        median = float(np.median(seconds))
        rows.append({"backend": backend.name(), "preset": config.preset, "batch": config.batch_size,
                     "precision": backend.resolve_precision(config.precision), "devices": count,
                     "device": backend.device_description(count), "rounds": rounds, "steps_per_round": steps,
                     "s_per_step": round(median, 4),
                     "real_images_per_s": round(config.batch_size * config.n_iter_d / median, 1),
                     "speedup_vs_1_device": round(single / median, 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="tiny", choices=("seed", "small", "tiny"))
    parser.add_argument("--batch", type=int, default=128, help="the global batch, split across the devices")
    parser.add_argument("--devices", default="1,2,4",
                        help="comma-separated device counts (1 is always timed)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    args = parser.parse_args()
    images = data.to_unit_range(data.load_mnist(args.data).x_train)
    counts = sorted({1} | {int(c) for c in args.devices.split(",")})
    config = TrainConfig(preset=args.preset, batch_size=args.batch, precision="float32")
    for row in compare(config, images, counts, args.rounds, args.steps):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
