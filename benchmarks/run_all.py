"""`make bench`: every CPU benchmark in one run, then their tables into docs/BENCHMARKS.md.

Each benchmark runs in its own process (the Keras backend is fixed per process), one after the other
so that none competes for the cores. Raw results go to docs/benchmarks-cpu.json; the section of
docs/BENCHMARKS.md between the `cpu-benchmarks` markers is rewritten from them (the rest is kept).

    python -m benchmarks.run_all --data ~/data/mnist.npz \
        [--only throughput,data_parallel,sweep,presets,quality,ema_decay,jobs,serving,promotion_noise]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("throughput", "data_parallel", "sweep", "presets", "quality", "ema_decay", "jobs", "serving",
         "promotion_noise")
# Quality per minute of each preset with its own recipe, and of the TF DCGAN tutorial's recipe
PRESETS_COMPARED = ("cpu", "small", "tiny", "tutorial")
# The average's decay compared where a run takes thousands of steps in minutes: preset tiny
EMA_DECAY_RUN = ["--preset", "tiny", "--recipes", "project", "--other-decays", "0.99,0.995,0.9999"]
# (backend, preset, rounds, steps per round): enough steps per round that a round lasts seconds
THROUGHPUT_RUNS = [("tensorflow", "seed", 3, 2), ("tensorflow", "small", 5, 5), ("tensorflow", "tiny", 3, 20),
                   ("jax", "seed", 3, 1), ("jax", "small", 5, 3)]
# The data-parallel step on 1, 2 and 4 virtual CPU devices (JAX): preset, global batch, rounds,
# steps per round
DATA_PARALLEL_RUN, DATA_PARALLEL_DEVICES = ("tiny", 128, 5, 5), (1, 2, 4)


def run_json(module: str, args: list[str], backend: str = "tensorflow", **extra_env: str) -> list[dict]:
    """Run `python -m module args`; returns the JSON objects it printed, one per line."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **extra_env}
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def cpu_isa() -> str:
    """The widest vector instructions the kernels may use, of avx512_bf16, avx512f, avx2 and avx ("" if
    none): this CPU's, or fewer where ONEDNN_MAX_CPU_ISA caps TensorFlow's kernels (a stand-in for an
    older CPU; machine() records both)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").lower()
    return "avx2" if cap.startswith("avx2") and _cpu_flags_isa() != "avx" else _cpu_flags_isa()


def _cpu_flags_isa() -> str:
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    return next((name for name in ("avx512_bf16", "avx512f", "avx2", "avx") if name in flags), "")


def machine() -> dict:
    from training.backend import installed_versions
    from training.tracking import PACKAGES

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal"))
    capped = {"isa_capped_from": _cpu_flags_isa()} if cpu_isa() != _cpu_flags_isa() else {}
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "isa": cpu_isa(), **capped,
            "cores": os.cpu_count(),
            "memory_gib": round(memory_kb / 2**20), "python": platform.python_version(),
            **installed_versions((*PACKAGES, "kfp"))}


def most_common(machines: dict[str, dict]) -> dict:
    """The machine most parts were measured on: the page's header names it, each other part its own (a
    run of some parts on another machine or setting leaves the others' header as it was)."""
    keys = [json.dumps(m, sort_keys=True) for m in machines.values()]
    best = max(keys, key=keys.count)
    return next(m for m, key in zip(machines.values(), keys) if key == best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS)}; empty: only rewrite the page")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "benchmarks-cpu.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench")
    parser.add_argument("--marks", default="2.5,5,10", help="quality marks, minutes of training")
    parser.add_argument("--quality-recipes", default="project,tutorial",
                        help="recipes the quality part trains (the others keep their saved rows)")
    args = parser.parse_args()
    parts = [p for p in args.only.split(",") if p]  # --only "" rewrites the page from the saved results
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    data = str(Path(args.data).resolve()) if Path(args.data).is_file() else args.data
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    here = machine() if parts else results.get("machine")
    machines = results.setdefault("machines", {})
    for part in (p for p in PARTS if p in results):  # measured before parts kept their own: the header's
        machines.setdefault(part, results.setdefault("machine", here))
    seconds = results.setdefault("seconds", {})
    jobs_dir = args.work / "jobs"

    def timed(part, fn):
        started = time.perf_counter()
        results[part] = fn()
        machines[part] = here
        seconds[part] = round(time.perf_counter() - started)
        print(f"bench: {part} done in {seconds[part]} s", flush=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")  # a later part's failure loses nothing

    if "throughput" in parts:
        timed("throughput", lambda: [
            run_json("benchmarks.throughput", ["--data", data, "--preset", preset, "--rounds", str(rounds),
                                               "--steps", str(steps)], backend)[-1]
            for backend, preset, rounds, steps in THROUGHPUT_RUNS])
    if "data_parallel" in parts:
        preset, batch, rounds, steps = DATA_PARALLEL_RUN
        timed("data_parallel", lambda: run_json(
            "benchmarks.data_parallel",
            ["--data", data, "--preset", preset, "--batch", str(batch), "--rounds", str(rounds), "--steps",
             str(steps), "--devices", ",".join(map(str, DATA_PARALLEL_DEVICES))], "jax",
            XLA_FLAGS=f"--xla_force_host_platform_device_count={max(DATA_PARALLEL_DEVICES)}"))
    if "sweep" in parts:
        timed("sweep", lambda: run_json("benchmarks.sweep_throughput", ["--data", data, "--trials", "4",
                                                                        "--workers", "1,2"]))
    if "presets" in parts:
        timed("presets", lambda: {name: run_json("benchmarks.quality_per_minute", [
            "--data", data, "--marks", args.marks, "--other-decays", "",
            *(["--recipes", "tutorial"] if name == "tutorial" else ["--recipes", "project", "--preset", name])
        ])[-1]["quality_per_minute"] for name in PRESETS_COMPARED})
    if "quality" in parts:
        timed("quality", lambda: results.get("quality", {}) | run_json(
            "benchmarks.quality_per_minute", ["--data", data, "--marks", args.marks,
                                              "--recipes", args.quality_recipes])[-1]["quality_per_minute"])
    if "ema_decay" in parts:
        timed("ema_decay", lambda: run_json("benchmarks.quality_per_minute", [
            "--data", data, "--marks", args.marks, *EMA_DECAY_RUN])[-1]["quality_per_minute"])
    if "jobs" in parts:
        shutil.rmtree(jobs_dir, ignore_errors=True)
        timed("jobs", lambda: run_json("benchmarks.pipeline_overhead",
                                       ["--data", data, "--work", str(jobs_dir)])[-1]["pipeline_overhead"])
    if "serving" in parts:
        if not (jobs_dir / "mlflow.db").is_file():
            parser.error("serving needs the model registered by the jobs part: run it first")
        timed("serving", lambda: run_json("benchmarks.serving_latency", [
            "--tracking-uri", f"sqlite:///{(jobs_dir / 'mlflow.db').resolve()}",
            "--work", str(args.work)])[-1]["serving"])
    if "promotion_noise" in parts:
        timed("promotion_noise", lambda: run_json("benchmarks.promotion_noise",
                                                  ["--data", data])[-1]["promotion_noise"])

    if machines:
        results["machine"] = most_common(machines)
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    report.write_section(args.markdown, report.render(results))
    print(f"bench: {args.results} and {args.markdown} written", flush=True)


if __name__ == "__main__":
    main()
