"""Race two promotions of one model, many times in a row: the champion must always be the one the rule
picks, and no racer may fail. Each round registers three versions of one model, generators each clearly
better than the last (linear generators: MNIST's mean plus its first 2, 8 and 64 principal components,
drawn by z; a promotion scores them head to head), promotes version 1, then starts
`mnist-gan promote --version 2` and `--version 3` at once.

    python -m benchmarks.promotion_race --data mnist.npz --rounds 30             # embedded sqlite registry
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m benchmarks.promotion_race --data mnist.npz --rounds 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import rounds

COMPONENTS = (2, 8, 64)  # versions 1, 2 and 3: more of MNIST's variance, a lower FID
SAMPLES = "2000"


def linear_generator(x_train, components: int):
    """G(z) = tanh(mean + sum_k z_k sqrt(3 l_k) v_k) over MNIST's first `components` principal axes v_k
    (variances l_k; z ~ U(-1, 1) has variance 1/3): more axes, closer to the data."""
    import keras
    import numpy as np

    images = x_train.reshape(len(x_train), -1).astype(np.float64) / 127.5 - 1
    mean = images.mean(0)
    _, singular, axes = np.linalg.svd(images[:10_000] - mean, full_matrices=False)
    scale = singular[:components] / np.sqrt(10_000 - 1) * np.sqrt(3)
    kernel = np.zeros((100, 784))
    kernel[:components] = axes[:components] * scale[:, None]
    bias = np.arctanh(np.clip(mean, -0.99, 0.99))
    return keras.Sequential([
        keras.Input((100,)),
        keras.layers.Dense(784, activation="tanh", kernel_initializer=keras.initializers.Constant(kernel),
                           bias_initializer=keras.initializers.Constant(bias)),
        keras.layers.Reshape((28, 28, 1)),
    ])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--data", required=True, help="mnist.npz: the generators' and the judge's digits")
    args = parser.parse_args()
    work, data = Path(tempfile.mkdtemp(prefix="promotion-race-")), str(Path(args.data).resolve())
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    os.chdir(work)  # where an sqlite store's artifacts go (./mlruns), and the promotions' scratch
    import mlflow

    from training import registry
    from training.data import load_mnist

    mnist = load_mnist(data)
    model_ids, experiment = [], mlflow.set_experiment("promotion-race").experiment_id
    for components in COMPONENTS:
        generator = work / f"generator-{components}.keras"
        linear_generator(mnist.x_train, components).save(generator)
        with mlflow.start_run(experiment_id=experiment, run_name=f"{components} components"):
            model_ids.append(registry.log_generator(generator))
    scores = {key: 1.0 for key in registry.EVALUATION_KEYS} | {"samples": float(SAMPLES)}
    client, failures, started = mlflow.MlflowClient(), [], time.perf_counter()
    for round_ in range(1, args.rounds + 1):
        name = f"race-{round_:03d}-{int(time.time())}"
        for model_id in model_ids:
            registry.register(model_id, name, {}, scores)
        promote = [sys.executable, "-m", "training.cli", "promote", "--model-name", name, "--data", data,
                   "--samples", SAMPLES, "--min-classes-covered", "0"]
        subprocess.run([*promote, "--version", "1"], check=True, capture_output=True)
        racers = [subprocess.Popen([*promote, "--version", v], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for v in ("2", "3")]
        errors = [r.communicate()[1].strip() for r in racers if r.wait() != 0]
        champion = client.get_model_version_by_alias(name, "champion").version
        if errors or str(champion) != "3":
            failures.append({"round": round_, "champion": champion, "errors": errors})
        print(f"round {round_}: champion {champion}{', FAILED: ' + '; '.join(errors) if errors else ''}",
              flush=True)
    rounds.finish(args.rounds, failures, started)


if __name__ == "__main__":
    main()
