"""What the race benchmarks (promotion_race, deploy_race) print at the end and exit with."""

from __future__ import annotations

import json
import os
import sys
import time


def finish(rounds: int, failures: list[dict], started: float) -> None:
    """One JSON line (rounds, failures, the registry without credentials, seconds); exit 1 on any failure."""
    print(json.dumps({"rounds": rounds, "failed": len(failures), "failures": failures,
                      "tracking_uri": os.environ["MLFLOW_TRACKING_URI"].split("@")[-1],
                      "seconds": round(time.perf_counter() - started, 1)}))
    sys.exit(1 if failures else 0)
