"""The memory `mnist-gan evaluate`, the job the pipeline's evaluate task runs, needs at the largest
`samples` a job accepts, beside the evaluate task's memory limit (pipelines/mnist_gan.py,
ClusterSettings.task_memory).

    python -m benchmarks.evaluation_memory --data ~/data/mnist.npz [--samples 5000 10000] [--preset seed]

An evaluation generates and classifies its samples a batch at a time and its metrics work in blocks of
bounded size (training/evaluation.py, training/metrics.py): what grows with N is only what it keeps of each
sample (its features). Two measurements make the estimate:
- the peak resident memory of the whole job (frameworks, MLflow, the report) at the largest of `samples`;
- the bytes a sample adds to the evaluation's peak of NumPy memory (tracemalloc, which sees every array
  and none of the frameworks' noise), from the smallest to the largest of `samples`.
Their sum at MAX_SAMPLES is an upper bound: it adds the samples' memory to the job's peak, wherever it is.
The generator is a freshly built one of the preset (its weights do not change the memory); the evaluator
is the cached one (trained first if absent, outside the measurement); the real reference is computed, not
read from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
# Runs a command and prints the peak resident memory of its process tree's largest process, in bytes.
_PEAK_OF = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
            "sys.exit(done.returncode)\n")
# Prints the peak bytes NumPy and Python hold during one evaluation: DATA GENERATOR SAMPLES.
_TRACED_PEAK_OF_EVALUATION = """
import sys, tracemalloc
from training import classifier, evaluation
from training.data import load_mnist
from training.sampling import load_generator
mnist, generator = load_mnist(sys.argv[1]), load_generator(sys.argv[2])
judge = classifier.load_or_train(mnist)
evaluation.evaluate(generator, mnist, judge, 10)  # the graphs traced, the test split's features cached
tracemalloc.start()
evaluation.evaluate(generator, mnist, judge, int(sys.argv[3]))
print(tracemalloc.get_traced_memory()[1])
"""


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity ("4Gi", "512Mi", "4G") in bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|)", quantity)
    if not match:
        raise ValueError(f"not a memory quantity this benchmark reads: {quantity!r}")
    return int(match[1]) * UNITS[match[2]]


def _run(script_args: list[str], samples: int, directory: Path) -> int:
    """Run python SCRIPT_ARGS with a fresh tracking database and cache (so the real reference is computed)
    in `directory`; returns the number its last line prints."""
    from training.data import EVALUATOR_CACHE

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{directory / 'mlflow.db'}",
               MNIST_GAN_CACHE=str(directory / f"cache-{samples}"),
               MNIST_GAN_EVALUATOR_CACHE=str(EVALUATOR_CACHE), PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, *script_args], cwd=directory, env=env, capture_output=True,
                          text=True, timeout=3600, check=False)
    if done.returncode:
        raise RuntimeError(f"{script_args[-1]} samples: the evaluation failed:\n{done.stderr[-3000:]}")
    return int(done.stdout.splitlines()[-1])


def measure(data: str, samples: list[int], preset: str = "seed") -> dict:
    """The job's peak resident bytes at the largest of `samples`, the bytes a sample adds to an evaluation
    (from the smallest to the largest), and their sum at MAX_SAMPLES beside the evaluate task's limit.
    Samples above metrics.COLUMN_BLOCK keep the blocks the metrics work in at their full size."""
    from pipelines.mnist_gan import ClusterSettings
    from training import classifier
    from training.config import MAX_SAMPLES, TrainConfig
    from training.data import load_mnist
    from training.models import build_models

    smallest, largest = min(samples), max(samples)
    classifier.load_or_train(load_mnist(data))  # trained outside the measurement if absent
    with tempfile.TemporaryDirectory() as tmp:
        generator = Path(tmp) / "generator.keras"
        build_models(preset, TrainConfig().z_dim)[0].save(generator)
        traced = {n: _run(["-c", _TRACED_PEAK_OF_EVALUATION, data, str(generator), str(n)], n, Path(tmp))
                  for n in (smallest, largest)}
        job = _run(["-c", _PEAK_OF, sys.executable, "-m", "training.cli", "evaluate", "--generator",
                    str(generator), "--data", data, "--samples", str(largest)], largest, Path(tmp))
    per_sample = (traced[largest] - traced[smallest]) / (largest - smallest)
    return {"preset": preset, "samples": [smallest, largest], "job_peak_bytes": job,
            "evaluation_numpy_peak_bytes": [traced[smallest], traced[largest]],
            "bytes_per_sample": round(per_sample, 1), "max_samples": MAX_SAMPLES,
            "at_max_samples_bytes": round(job + max(per_sample, 0.0) * (MAX_SAMPLES - largest)),
            "task_memory_bytes": quantity_bytes(ClusterSettings().task_memory)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--samples", type=int, nargs="+", default=[5_000, 10_000])
    parser.add_argument("--preset", default="seed")
    args = parser.parse_args()
    print(json.dumps(measure(args.data, args.samples, args.preset)))


if __name__ == "__main__":
    main()
