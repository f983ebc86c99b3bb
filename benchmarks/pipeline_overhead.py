"""What the jobs cost around training: the MLproject main job and the whole local Kubeflow pipeline.

Each runs as a user runs it (a subprocess on the embedded sqlite MLflow), with a short training; its
overhead is the wall time minus the `train_seconds` its training run logged (start-up, data,
evaluation of `samples` images, reports, registration, promotion). The evaluation's own time is its
run's `evaluation_seconds`.

    python -m benchmarks.pipeline_overhead --data ~/data/mnist.npz --work outputs/bench/jobs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def job_env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{work / 'mlflow.db'}", PYTHONPATH=str(ROOT),
               TF_CPP_MIN_LOG_LEVEL="3", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def timed(args: list[str], work: Path, log_name: str) -> float:
    started = time.perf_counter()
    with open(work / log_name, "w") as log:
        done = subprocess.run(args, cwd=work, env=job_env(work), stdout=log, stderr=subprocess.STDOUT,
                              check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... exited with {done.returncode}; see {work / log_name}")
    return seconds


def logged_seconds(work: Path, since_ms: int) -> dict[str, float]:
    """train_seconds and evaluation_seconds of the runs that started after `since_ms`."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found: dict[str, float] = {}
    for run in client.search_runs(experiments, f"attributes.start_time >= {since_ms}"):
        for name in ("train_seconds", "evaluation_seconds"):
            if name in run.data.metrics:
                found[name] = found.get(name, 0.0) + run.data.metrics[name]
    return found


def measure(name: str, args: list[str], work: Path) -> dict:
    since_ms = int(time.time() * 1000)
    wall = timed(args, work, f"{name}.log")
    seconds = logged_seconds(work, since_ms)
    row = {"job": name, "wall_s": round(wall, 1), "train_s": round(seconds["train_seconds"], 1),
           "overhead_s": round(wall - seconds["train_seconds"], 1),
           "evaluation_s": round(seconds["evaluation_seconds"], 1)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (its mlflow.db is kept)")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.data).resolve()) if Path(args.data).is_file() else args.data
    params = {"data": data, "preset": "tiny", "train_images": 2048,
              "epochs": 1, "batch_size": 64, "samples": args.samples,
              "checkpoint_dir": str(work / "checkpoints")}
    mlproject = [item for key, value in params.items() for item in ("-P", f"{key}={value}")]
    pipeline = [item for key, value in params.items() for item in ("-p", f"{key}={value}")]
    rows = [
        measure("mlflow run (main job)", [str(Path(sys.executable).parent / "mlflow"), "run", str(ROOT),
                                          "--env-manager", "local", *mlproject], work),
        measure("kfp.local pipeline", [sys.executable, "-m", "training.cli", "pipeline", "run-local",
                                       *pipeline, "-p", "min_classes_covered=0",
                                       "--pipeline-root", str(work / "kfp")], work),
    ]
    # recorded without this machine's folders: the data file by name, the scratch folder as such
    shown = {**params, "checkpoint_dir": "<scratch>/checkpoints",
             "data": Path(data).name if Path(args.data).is_file() else data}
    print(json.dumps({"pipeline_overhead": {"params": shown, "jobs": rows}}), flush=True)


if __name__ == "__main__":
    main()
