"""Latency of one registered generator behind `mlflow models serve` and behind the serving image (MLServer,
V2 protocol, as KServe runs it), side by side on 127.0.0.1 under bounded load.

The model's files are downloaded once (MLmodel at the top, as KServe's storage initializer leaves them);
both servers serve that folder, the image from a read-only /mnt/models. For each client count and image
count, after 5 warm-up requests each, the servers take turns over `rounds` rounds of `clients` threads
sending requests for (seed, n). Every answer is checked for status 200 and n images of 28 x 28; anything
else counts as an error (exit 1). Then each server's memory: its process tree's RSS, and for the image
its container's cgroup peak. Needs a container engine: `. infra/containers/engine.sh` first.

    python -m benchmarks.serving_latency --tracking-uri sqlite:///outputs/bench/jobs/mlflow.db \
        --model-uri models:/mnist-gan-generator@champion --images 1,64 --clients 1,8 --requests 400
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infra.local_stack import background, free_port, wait_until

ENGINE = os.environ.get("CONTAINER_ENGINE", "docker")
SERVING_IMAGE = os.environ.get("MNIST_GAN_SERVING_IMAGE", "ghcr.io/mnist-gan/mnist-gan-serving:0.1.0")
MODEL_NAME = "mnist-gan"  # the image's MLSERVER_MODEL_NAME (KServe sets the InferenceService's name)
# Settings of this process that reach both servers, so that both run the same kernels
PASSED_ON = ("ONEDNN_MAX_CPU_ISA",)
BIN = Path(sys.executable).parent
VERSIONS = """
import contextlib, importlib.metadata as m, json
versions = {}
for name in ("mlserver", "mlflow", "tensorflow", "tensorflow-cpu", "keras"):
    with contextlib.suppress(m.PackageNotFoundError):
        versions[name] = m.version(name)
print(json.dumps(versions))
"""  # run by each server's Python


def invocations_body(seed: int, n: int) -> dict:
    return {"dataframe_split": {"columns": ["seed", "n"], "data": [[seed, n]]}}


def invocations_shape(answer: dict) -> tuple:
    return np.asarray(answer["predictions"]).shape


def v2_body(seed: int, n: int) -> dict:
    return {"parameters": {"content_type": "pd"},
            "inputs": [{"name": name, "shape": [1], "datatype": "INT64", "data": [value]}
                       for name, value in (("seed", seed), ("n", n))]}


def v2_shape(answer: dict) -> tuple:
    (output,) = answer["outputs"]
    shape = tuple(output["shape"])
    return shape if output["datatype"] == "UINT8" and len(output["data"]) == math.prod(shape) else ()


@dataclass
class Server:
    name: str
    url: str                             # where requests are POSTed
    body: Callable[[int, int], dict]     # (seed, n) -> the request
    shape: Callable[[dict], tuple]       # the answer -> the shape of its images
    pid: int                             # the root of the server's process tree
    ready_s: float
    versions: dict
    container: str | None = None


def post(server: Server, seed: int, n: int) -> tuple[float, bool]:
    """Seconds until the whole answer was read, and whether it was 200 with n images of 28 x 28."""
    request = urllib.request.Request(server.url, json.dumps(server.body(seed, n)).encode(),
                                     {"Content-Type": "application/json"})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, answer = response.status, response.read()
        seconds = time.perf_counter() - started
        return seconds, status == 200 and server.shape(json.loads(answer)) == (n, 28, 28)
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return time.perf_counter() - started, False


def load(server: Server, n: int, seeds: range, clients: int) -> tuple[list[tuple[float, bool]], float]:
    """One (seconds, ok) per seed from `clients` concurrent threads, and the wall time of them all."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda seed: post(server, seed, n), seeds))
    return results, time.perf_counter() - started


def summary(results: list[tuple[float, bool]], wall: float, n: int, clients: int) -> dict:
    latencies = np.array([seconds for seconds, _ in results]) * 1e3
    return {"images_per_request": n, "clients": clients, "requests": len(results),
            "errors": sum(not ok for _, ok in results),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p99_ms": round(float(np.percentile(latencies, 99)), 1),
            "max_ms": round(float(latencies.max()), 1), "requests_per_s": round(len(results) / wall, 1)}


def measure(servers: list[Server], images: list[int], clients: list[int], requests: int,
            rounds: int) -> dict[str, list[dict]]:
    """Each server's rows; within a row the servers take turns, so that drift on shared cores hits both."""
    rows = {server.name: [] for server in servers}
    per_round = requests // rounds
    for c in clients:
        for n in images:
            for server in servers:
                for seed in range(5):
                    post(server, 10**6 + seed, n)  # warm-up
            runs = {server.name: ([], 0.0) for server in servers}
            for r in range(rounds):
                for server in servers:
                    results, wall = load(server, n, range(r * per_round, (r + 1) * per_round), c)
                    done, walls = runs[server.name]
                    runs[server.name] = done + results, walls + wall
            for server in servers:
                rows[server.name].append(summary(*runs[server.name], n, c))
                print(json.dumps({"server": server.name, **rows[server.name][-1]}), flush=True)
    return rows


def tree_memory_mib(pid: int) -> dict:
    """RSS now and the sum of each process's own peak RSS (VmHWM) over `pid` and its descendants: the
    peaks may fall at different moments and shared pages count in each, so the sum bounds the tree's peak
    from above."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree = {pid}
    while grown := {child for child, parent in parents.items() if parent in tree} - tree:
        tree |= grown
    kib = {"VmRSS": 0, "VmHWM": 0}
    for process in tree:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in kib:
                    kib[key] += int(value.split()[0])
    return {"processes": len(tree), "rss_mib": round(kib["VmRSS"] / 1024),
            "peak_rss_sum_mib": round(kib["VmHWM"] / 1024)}


def container_peak_mib(container: str) -> dict:
    """The container's cgroup memory peak, page cache included: cgroup v2 memory.peak, else v1's
    memory.max_usage_in_bytes."""
    script = ("for f in /sys/fs/cgroup/memory.peak /sys/fs/cgroup/memory/memory.max_usage_in_bytes; do "
              "[ -r $f ] && echo $f $(cat $f) && break; done")
    out = subprocess.run([ENGINE, "exec", container, "sh", "-c", script], capture_output=True, text=True,
                         timeout=60, check=False).stdout.split()
    return {"cgroup_peak_mib": round(int(out[1]) / 2**20), "cgroup_file": out[0]} if len(out) == 2 else {}


def versions(python: list[str]) -> dict:
    return json.loads(subprocess.run([*python, "-c", VERSIONS], capture_output=True, text=True, timeout=120,
                                     check=True).stdout)


@contextlib.contextmanager
def started(args: list[str], env: dict, ready_url: str, log: Path):
    """`args` in the background until it answers 200 on `ready_url`; yields (process, seconds to ready)."""
    began = time.perf_counter()
    with background(args, log, env) as process:
        wait_until(lambda: urllib.request.urlopen(ready_url, timeout=3).status == 200, args[0], process, log,
                   timeout=300)
        yield process, round(time.perf_counter() - began, 1)


@contextlib.contextmanager
def mlflow_serve(model: Path, work: Path):
    port = free_port()
    args = [str(BIN / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    url = f"http://127.0.0.1:{port}"
    with started(args, env, f"{url}/ping", work / "mlflow-serve.log") as (process, ready_s):
        yield Server("mlflow models serve", f"{url}/invocations", invocations_body, invocations_shape,
                     process.pid, ready_s, versions([sys.executable]))


@contextlib.contextmanager
def serving_image(model: Path, work: Path, image: str):
    """The image as KServe runs it, but on the host's network: MLServer binds 127.0.0.1 on free ports."""
    ports = {name: str(free_port()) for name in ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT",
                                                  "MLSERVER_METRICS_PORT")}
    env = {"MLSERVER_HOST": "127.0.0.1", **ports, **{k: os.environ[k] for k in PASSED_ON if k in os.environ}}
    name = f"mnist-gan-bench-serving-{ports['MLSERVER_HTTP_PORT']}"
    args = [ENGINE, "run", "--rm", "--name", name, "--network", "host", "-v", f"{model}:/mnt/models:ro",
            *(f"--env={key}={value}" for key, value in env.items()), image]
    url = f"http://127.0.0.1:{ports['MLSERVER_HTTP_PORT']}/v2/models/{MODEL_NAME}"
    try:
        with started(args, dict(os.environ), f"{url}/ready", work / "serving-image.log") as (_, ready_s):
            pid = subprocess.run([ENGINE, "inspect", "-f", "{{.State.Pid}}", name], capture_output=True,
                                 text=True, timeout=60, check=True).stdout
            yield Server("MLServer", f"{url}/infer", v2_body, v2_shape, int(pid), ready_s,
                         versions([ENGINE, "exec", name, "python"]), container=name)
    finally:
        subprocess.run([ENGINE, "rm", "-f", name], capture_output=True, timeout=120, check=False)


def download(tracking_uri: str, model_uri: str, target: Path) -> Path:
    import mlflow

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    mlflow.set_tracking_uri(tracking_uri)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--model-uri", default="models:/mnist-gan-generator@champion")
    parser.add_argument("--image", default=SERVING_IMAGE)
    parser.add_argument("--images", default="1,64", help="images per request, comma-separated")
    parser.add_argument("--clients", default="1,8", help="concurrent client threads, comma-separated")
    parser.add_argument("--requests", type=int, default=400, help="per server, client count and image count")
    parser.add_argument("--rounds", type=int, default=2, help="turns each server takes per row")
    parser.add_argument("--work", type=Path, default=Path("outputs/bench"))
    args = parser.parse_args()
    if shutil.which(ENGINE) is None:
        parser.error(f"no container engine {ENGINE!r}: run `. infra/containers/engine.sh` first")
    args.work.mkdir(parents=True, exist_ok=True)
    model = download(args.tracking_uri, args.model_uri, args.work / "serving-model")
    with mlflow_serve(model, args.work) as mlflow, serving_image(model, args.work, args.image) as mlserver:
        servers = [mlflow, mlserver]
        rows = measure(servers, [int(x) for x in args.images.split(",")],
                       [int(x) for x in args.clients.split(",")], args.requests, args.rounds)
        memory = {server.name: {**tree_memory_mib(server.pid),
                                **(container_peak_mib(server.container) if server.container else {})}
                  for server in servers}
    print(json.dumps({"serving": {
        "model_uri": args.model_uri, "image": args.image, "rounds": args.rounds,
        "servers": [{"name": s.name, "ready_s": s.ready_s, "versions": s.versions, "memory": memory[s.name],
                     "rows": rows[s.name]} for s in servers]}}), flush=True)
    if any(row["errors"] for server_rows in rows.values() for row in server_rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
