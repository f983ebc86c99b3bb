"""Trials per hour of a local sweep (`mnist-gan sweep`) with 1 and 2 worker processes.

Each measurement is a whole sweep as a user runs it, in a fresh folder with its own sqlite tracking
store: the trials (train + evaluate, each in its own process), the ranking, registration and promotion.
The evaluator classifier comes from the cache, as after a user's first run.

    python -m benchmarks.sweep_throughput --data ~/data/mnist.npz --trials 4 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A small trial: the tiny preset, 2 epochs of 2,048 images, 1,000 evaluated samples.
TRIAL = ["--preset", "tiny", "--train-images", "2048", "--batch-size", "64", "--epochs", "2",
         "--samples", "1000", "--min-classes-covered", "0"]


def sweep_seconds(data: str, trials: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
        command = [sys.executable, "-m", "training.cli", "sweep",
                   "-s", f"seed={','.join(map(str, range(trials)))}",
                   "--workers", str(workers), "--data", data, "--checkpoint-dir", f"{work}/ckpt", *TRIAL]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sweep with {workers} worker(s) exited {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    for workers in map(int, args.workers.split(",")):
        seconds = sweep_seconds(args.data, args.trials, workers)
        print(json.dumps({"trials": args.trials, "workers": workers, "seconds": round(seconds, 1),
                          "trials_per_hour": round(args.trials * 3600 / seconds, 1),
                          "trial": " ".join(TRIAL)}), flush=True)


if __name__ == "__main__":
    main()
