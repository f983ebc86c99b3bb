"""Latency of `mlflow models serve` on 127.0.0.1 for a registered generator, under bounded load.

`clients` threads send `requests` POST /invocations in all for each image count (seed, n), after a
warm-up; then a soak: `soak_clients` concurrent clients send `soak_requests` one-image requests. Every
answer is checked for status 200 and the right shape; anything else counts as an error (exit 1).

    python -m benchmarks.serving_latency --tracking-uri sqlite:///outputs/bench/jobs/mlflow.db \
        --model-uri models:/mnist-gan-generator@champion --images 1,64 --requests 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from infra.local_stack import background, free_port, wait_until


def post(url: str, seed: int, n: int) -> tuple[float, bool]:
    """Seconds of one request and whether it came back 200 with n images of 28 x 28."""
    body = json.dumps({"dataframe_split": {"columns": ["seed", "n"], "data": [[seed, n]]}}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            ok = (response.status == 200
                  and np.asarray(json.loads(response.read())["predictions"]).shape == (n, 28, 28))
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        ok = False
    return time.perf_counter() - started, ok


def load(url: str, n: int, requests: int, clients: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: post(url, i, n), range(requests)))
    wall = time.perf_counter() - started
    latencies = np.array([seconds for seconds, _ in results]) * 1e3
    return {"images_per_request": n, "clients": clients, "requests": requests,
            "errors": sum(not ok for _, ok in results),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "max_ms": round(float(latencies.max()), 1), "requests_per_s": round(requests / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-uri", default="models:/mnist-gan-generator@champion")
    parser.add_argument("--images", default="1,64", help="images per request, comma-separated")
    parser.add_argument("--requests", type=int, default=200, help="per image count")
    parser.add_argument("--clients", type=int, default=1, help="concurrent client threads")
    parser.add_argument("--soak-clients", type=int, default=8, help="then a soak: this many clients ...")
    parser.add_argument("--soak-requests", type=int, default=2000,
                        help="... sending this many 1-image requests")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": args.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    serve = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", args.model_uri,
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    log = args.work / "serve.log"
    started = time.perf_counter()
    with background(serve, log, env) as server:
        wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).status == 200,
                   "mlflow models serve", server, log, timeout=300)
        ready_s = time.perf_counter() - started
        url = f"http://127.0.0.1:{port}/invocations"
        rows = []
        for n in (int(x) for x in args.images.split(",")):
            for i in range(5):
                post(url, 10**6 + i, n)  # warm-up
            rows.append(load(url, n, args.requests, args.clients))
            print(json.dumps(rows[-1]), flush=True)
        if args.soak_requests:
            rows.append({**load(url, 1, args.soak_requests, args.soak_clients), "soak": True})
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"serving": {"model_uri": args.model_uri, "ready_s": round(ready_s, 1),
                                  "rows": rows}}), flush=True)
    if any(row["errors"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
