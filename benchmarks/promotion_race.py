"""Race two promotions of one model, many times in a row: the champion must always be the one the rule
picks, and no racer may fail. Each round registers three versions (FID 100, 50, 40) of a small
generator, promotes version 1, then starts `mnist-gan promote --version 2` and `--version 3` at once.

    python -m benchmarks.promotion_race --rounds 30                       # embedded sqlite registry
    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python -m benchmarks.promotion_race --rounds 30
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


def _versions(name: str, model_id: str) -> None:
    from training import registry

    for fid in (100.0, 50.0, 40.0):
        scores = {key: 1.0 for key in registry.EVALUATION_KEYS}
        registry.register(model_id, name, {},
                          {**scores, "fid": fid, "classes_covered": 10.0, "samples": 2000.0})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="promotion-race-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    import mlflow

    from training import registry
    from training.models import PRESET_WIDTHS, build_generator

    generator = work / "generator.keras"
    build_generator(PRESET_WIDTHS["tiny"], 100).save(generator)
    with mlflow.start_run(experiment_id=mlflow.set_experiment("promotion-race").experiment_id):
        model_id = registry.log_generator(generator)
    client, failures, started = mlflow.MlflowClient(), [], time.perf_counter()
    for round_ in range(1, args.rounds + 1):
        name = f"race-{round_:03d}-{int(time.time())}"
        _versions(name, model_id)
        promote = [sys.executable, "-m", "training.cli", "promote", "--model-name", name]
        subprocess.run([*promote, "--version", "1"], check=True, capture_output=True)
        racers = [subprocess.Popen([*promote, "--version", v], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True) for v in ("2", "3")]
        errors = [r.communicate()[1].strip() for r in racers if r.wait() != 0]
        champion = client.get_model_version_by_alias(name, "champion").version
        if errors or str(champion) != "3":
            failures.append({"round": round_, "champion": champion, "errors": errors})
        print(f"round {round_}: champion {champion}{', FAILED: ' + '; '.join(errors) if errors else ''}",
              flush=True)
    print(json.dumps({"rounds": args.rounds, "failed": len(failures), "failures": failures,
                      "tracking_uri": os.environ["MLFLOW_TRACKING_URI"].split("@")[-1],
                      "seconds": round(time.perf_counter() - started, 1)}))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
