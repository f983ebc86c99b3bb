"""GPU check of the training library on the JAX backend: step throughput, the speedup over the seed
post's loop, the data-parallel step on 1, 2, 4 ... of the GPUs JAX sees, then a short real training run.

Run through `benchmarks/gpu_check.sh` (which sets KERAS_BACKEND=jax). `--cpu` is the dry run: tiny
preset with 1 G step per training step (a third of the graph to compile), few steps, same code path.
Writes a JSON report and sample grids under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DENSE_BF16_PEAK = 989e12  # H100/H200 SXM datasheet, dense bf16 FLOP/s


# (batch, precision) of the step measurements; (batch, project precision, seed-loop precision) of the
# comparisons with the seed post's loop.
STEP_CONFIGS = [(128, "float32"), (128, "mixed_bfloat16"), (512, "float32"), (512, "mixed_bfloat16")]
AGAINST_SEED_LOOP = [(128, "float32", "float32"), (128, "mixed_bfloat16", "float32"),
                     (128, "mixed_bfloat16", "mixed_bfloat16"), (512, "float32", "float32"),
                     (512, "mixed_bfloat16", "float32")]


DRY_RUN_BATCH = 32


def _dry_run_subset(configs: list, cpu: bool) -> list:
    """On the CPU dry run, the first and the last configuration at batch DRY_RUN_BATCH: every code path
    (precisions, loop, devices), a fraction of the compute."""
    return [(DRY_RUN_BATCH, *config[1:]) for config in (configs[0], configs[-1])] if cpu else configs


def measure_step(config, images: np.ndarray, steps: int) -> dict:
    """Compile time, then the median of `steps` timed steps (each waited for) after warm-up."""
    import jax

    from benchmarks.flops import step_flops
    from training import backend, data, loop

    gan = loop.build_gan(config)
    model_flops = step_flops(gan.generator, gan.discriminator, config.batch_size, config.n_iter_d,
                             config.n_iter_g)
    step = backend.compile_step(gan.train_step)
    state = gan.initial_state()
    device_images = jax.device_put(images)
    batches = data.epoch_batches(len(images), config.batch_size, config.n_iter_d, 0, 0)
    started = time.perf_counter()
    step = step.lower(state, device_images, batches[0]).compile()
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost or {}
    xla_flops = float(cost.get("flops", float("nan")))
    state, metrics = step(state, device_images, batches[0])
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - started
    for i in range(3):
        state, metrics = step(state, device_images, batches[1 + i])
    jax.block_until_ready(state)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, device_images, batches[(4 + i) % len(batches)])
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    # Back-to-back dispatch, as the training loop runs: no wait between steps.
    t0 = time.perf_counter()
    for i in range(steps):
        state, metrics = step(state, device_images, batches[i % len(batches)])
    jax.block_until_ready(state)
    pipelined = (time.perf_counter() - t0) / steps
    median = float(np.median(times))
    return {
        "preset": config.preset, "batch": config.batch_size,
        "precision": backend.resolve_precision(config.precision), "compile_s": round(compile_s, 2),
        "ms_per_step_waited": round(median * 1e3, 3), "ms_per_step_pipelined": round(pipelined * 1e3, 3),
        "real_images_per_s": round(config.batch_size * config.n_iter_d / pipelined, 1),
        "g_step_images_per_s": round(config.batch_size * config.n_iter_g / pipelined, 1),
        "model_flops_per_step": model_flops, "xla_flops_per_step": xla_flops,
        "model_tflops_per_s": round(model_flops / pipelined / 1e12, 1),
        "share_of_dense_bf16_peak": round(model_flops / pipelined / DENSE_BF16_PEAK, 3),
        "finite": bool(np.isfinite(backend.to_numpy(metrics)["d_loss"])),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpu", action="store_true", help="dry run: tiny preset, few steps")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import jax
    import keras

    from training import backend, data, loop
    from training.config import TrainConfig
    from training.data import load_mnist

    report: dict = {"keras": keras.__version__, "jax": jax.__version__, "backend": backend.name(),
                    "devices": [str(d) for d in jax.devices()], "accelerator": backend.accelerator()}
    print(json.dumps(report), flush=True)
    if not args.cpu and backend.accelerator() != "gpu":
        print("no GPU visible to JAX", file=sys.stderr)
        return 1
    mnist = load_mnist(args.data)
    images = data.to_unit_range(mnist.x_train)
    preset, steps = ("tiny", 3) if args.cpu else ("seed", 30)
    recipe = {"preset": preset, "n_iter_g": 1 if args.cpu else 0}
    if args.cpu:
        images = images[:1024]

    report["throughput"] = []
    for batch, precision in _dry_run_subset(STEP_CONFIGS, args.cpu):
        config = TrainConfig(**recipe, batch_size=batch, precision=precision)
        row = measure_step(config, images, steps)
        report["throughput"].append(row)
        print(json.dumps(row), flush=True)

    # The seed post's loop (benchmarks/seed_loop.py) against the project's step, rounds interleaved.
    from benchmarks.throughput import compare

    rounds, steps_per_round = (2, 2) if args.cpu else (5, 10)
    report["against_seed_loop"] = []
    for batch, precision, baseline_precision in _dry_run_subset(AGAINST_SEED_LOOP, args.cpu):
        config = TrainConfig(**recipe, batch_size=batch, precision=precision)
        row = compare(config, images, rounds, steps_per_round, baseline_precision,
                      peak_flops=DENSE_BF16_PEAK)
        report["against_seed_loop"].append(row)
        print(json.dumps(row), flush=True)

    # Data parallel (--devices): the same global batch split across 1, 2, 4 ... of the devices JAX sees.
    from benchmarks import data_parallel

    batch = DRY_RUN_BATCH if args.cpu else 512
    counts = data_parallel.usable_counts(len(jax.devices()), batch)
    rounds, steps_per_round = (2, 2) if args.cpu else (5, 10)
    report["data_parallel"] = data_parallel.compare(TrainConfig(**recipe, batch_size=batch), images,
                                                    counts, rounds, steps_per_round)
    for row in report["data_parallel"]:
        print(json.dumps(row), flush=True)

    # A real run through the training loop: preset seed, batch 128 (DRY_RUN_BATCH on the CPU), precision auto.
    config = TrainConfig(**recipe, batch_size=DRY_RUN_BATCH if args.cpu else 128,
                         epochs=1 if args.cpu else args.epochs,
                         max_steps=4 if args.cpu else 0, log_every=50,
                         checkpoint_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_check_run"))
    started = time.perf_counter()
    result = loop.train(config, images)
    wall = time.perf_counter() - started
    ips = [v for _, v in result.history["images_per_sec"]]
    steady_ips = float(np.median(ips[1:] if len(ips) > 1 else ips))
    steady_epoch_s = len(images) / steady_ips
    report["training"] = {
        "preset": preset, "precision": backend.resolve_precision(config.precision),
        "epochs": result.epochs_done, "steps": result.global_step, "wall_s": round(wall, 1),
        "steady_real_images_per_s": round(steady_ips, 1),
        "steady_s_per_epoch": round(steady_epoch_s, 2),
        "projected_200_epochs_min": round(200 * steady_epoch_s / 60, 1),
        "final": {k: round(v[-1][1], 4) for k, v in result.history.items()},
        # keras.utils.set_random_seed imports TensorFlow to seed it whenever it is installed; the GPU
        # host has none, so only MLflow counts as a leak here.
        "imported": {m: m in sys.modules for m in ("tensorflow", "mlflow")},
    }
    for grid in result.grid_paths:
        (out / grid.name).write_bytes(grid.read_bytes())
    print("\n" + json.dumps(report["training"]), flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    return 1 if report["training"]["imported"]["mlflow"] else 0


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "jax")
    sys.exit(main())
