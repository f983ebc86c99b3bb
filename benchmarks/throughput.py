"""Throughput of the project's compiled step against the seed post's loop, measured side by side.

One step = 1 D update + 5 G updates in both. After a warm-up (compilation) of each, the two run in
alternating rounds (A B A B ...), each round `steps` steps ended by one host sync; the ratio is taken
per round pair, so a drift of the machine's speed hits both sides alike.

    KERAS_BACKEND=jax python -m benchmarks.throughput --data ~/data/mnist.npz --preset small

Imports neither TensorFlow (on the JAX backend) nor MLflow, so the GPU check runs it too.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.flops import step_flops
from benchmarks.seed_loop import SeedGan
from training import backend, data, loop
from training.config import TrainConfig


def project_steps(config: TrainConfig, images: np.ndarray):
    """A function that runs n of the project's compiled steps, waits for them, and returns the seconds;
    on config.devices devices, as the training loop sets them up."""
    import keras

    gan = loop.build_gan(config)
    step = backend.compile_step(gan.train_step, gan.parallel)
    device_images = gan.parallel.replicate(keras.ops.convert_to_tensor(images))
    batches = data.epoch_batches(len(images), config.batch_size, config.n_iter_d, config.seed, 0)
    holder = {"state": gan.parallel.replicate(gan.initial_state()), "next": 0}

    def run(n: int) -> float:
        started = time.perf_counter()
        state, metrics = holder["state"], None
        for _ in range(n):
            state, metrics = step(state, device_images, batches[holder["next"] % len(batches)])
            holder["next"] += 1
        holder["state"] = state
        backend.to_numpy(metrics["g_loss"])
        return time.perf_counter() - started

    return run, gan


def seed_loop_steps(config: TrainConfig, images: np.ndarray):
    """The same for the post's loop (each train_on_batch returns host floats, so it always waits)."""
    baseline = SeedGan(images, config.preset, config.batch_size, config.learning_rate, config.z_dim,
                       config.n_iter_d, config.n_iter_g)

    def run(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            baseline.step()
        return time.perf_counter() - started

    return run


def interleaved(runners: dict, rounds: int, steps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per step of each runner in each round, after `warmup` untimed steps of each."""
    for run in runners.values():
        run(warmup)
    per_round: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            per_round[name].append(run(steps) / steps)
    return per_round


def compare(config: TrainConfig, images: np.ndarray, rounds: int, steps: int,
            baseline_precision: str | None = None, peak_flops: float | None = None) -> dict:
    """The project's step (config.precision) against the seed loop (baseline_precision, default the same)."""
    import keras

    project, gan = project_steps(config, images)
    keras.config.set_dtype_policy(baseline_precision or backend.resolve_precision(config.precision))
    baseline = seed_loop_steps(config, images)
    times = interleaved({"seed_loop": baseline, "project": project}, rounds, steps)
    ratios = [b / p for b, p in zip(times["seed_loop"], times["project"])]
    flops = step_flops(gan.generator, gan.discriminator, config.batch_size, config.n_iter_d, config.n_iter_g)
    row = {"backend": backend.name(), "preset": config.preset, "batch": config.batch_size,
           "precision": backend.resolve_precision(config.precision),
           "baseline_precision": baseline_precision or backend.resolve_precision(config.precision),
           "rounds": rounds, "steps_per_round": steps, "gflop_per_step": round(flops / 1e9, 1)}
    for name, seconds in times.items():
        median = float(np.median(seconds))
        row[f"{name}_s_per_step"] = round(median, 4)
        row[f"{name}_g_images_per_s"] = round(config.batch_size * config.n_iter_g / median, 1)
        row[f"{name}_gflop_per_s"] = round(flops / median / 1e9, 1)
        if peak_flops:
            row[f"{name}_share_of_peak"] = round(flops / median / peak_flops, 3)
    row.update(speedup_median=round(float(np.median(ratios)), 3), speedup_min=round(min(ratios), 3),
               speedup_max=round(max(ratios), 3))
    return row


def fp32_peak(sizes: tuple[int, ...] = (2048, 4096), repeats: int = 5) -> float:
    """The achievable fp32 FLOP/s of this backend on this machine: its best large matrix product."""
    import keras

    best = 0.0
    for n in sizes:
        a = keras.ops.convert_to_tensor(np.random.default_rng(0).random((n, n), dtype=np.float32))
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            started = time.perf_counter()
            keras.ops.convert_to_numpy(keras.ops.matmul(a, a)[0, 0])
            times.append(time.perf_counter() - started)
        best = max(best, 2 * n**3 / min(times[1:]))
    return best


def main() -> None:
    from training.data import load_mnist

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="small", choices=("seed", "small", "tiny"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    args = parser.parse_args()
    images = data.to_unit_range(load_mnist(args.data).x_train)
    peak = fp32_peak() if backend.accelerator() == "cpu" else None
    config = TrainConfig(preset=args.preset, batch_size=args.batch, precision=args.precision)
    row = compare(config, images, args.rounds, args.steps, peak_flops=peak)
    if peak:
        row["cpu_fp32_peak_gflop_per_s"] = round(peak / 1e9, 1)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
