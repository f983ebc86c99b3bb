"""Promotion's noise, calibration and cost, on real generators of preset `cpu`:

1. noise: one generator's FID over `--seeds` latent seeds at each N of `--samples` (mean, std);
2. calibration: three pairs of generators, a near tie, a small and a large gain, whose truth is the
   FID of each on `--truth-samples` latents (the same for all) against the test split. Each pair is
   scored head to head (`head_to_head.score`, N = `--pair-samples`) on each latent seed and judged by
   `PromotionRule(0, 0, 0, confidence)`: how often it promotes, and how often wrongly (a challenger the
   truth says is not better). The near tie's challenger is the one the truth says is not better, so
   every promotion there is a wrong one;
3. cost: a head-to-head's wall time next to one evaluation's (`evaluation.evaluate`) at the same N,
   and the paired bootstrap's alone, taking turns for `--rounds` rounds (medians).

The generators, each exported by `jobs.train` (preset `cpu`, no FID curve, so the last averaged G) in a
scratch sqlite MLflow store and loaded from `runs:/<run id>`: seed 0 stopped after each of `--steps`
(early, middle, late; `max_steps`, resumed) and seed 1 trained as long as the late one. The pairs:

- near tie: seed 0 against seed 1, both late. Moments of one training are no tie: 100 steps apart,
  the later is better by about 3 times the noise of their paired gain, and a copy with weights
  perturbed by noise is worse by about 7 times it (both measured while building this benchmark);
- small gain: seed 0, late against middle (100 steps apart by default);
- large gain: seed 0, late against early.

Step counts, not minutes, so that every machine trains the same generators.

    python -m benchmarks.promotion_noise --data ~/data/mnist.npz
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = (500, 4100, 4200)  # seed 0's early, middle and late generators (seed 1: late only)
# (pair, challenger, champion) as (seed, index in STEPS)
PAIRS = (("near tie", (1, 2), (0, 2)), ("small gain", (0, 2), (0, 1)), ("large gain", (0, 2), (0, 0)))
NOISE_GENERATOR = (0, 2)  # what a champion looks like
TRUTH_SEED = 2**31 + 3  # latents of the truth, apart from the seeds 0, 1, ... the head-to-heads draw
TRUTH_REPLICATES = 200  # the truth's own paired bootstrap: how sure its gain is


def progress(message: str) -> None:
    print(f"promotion_noise: {message}", file=sys.stderr, flush=True)


def train(data: str, seed: int, steps: list[int], work: Path) -> list:
    """The generators `jobs.train` exports after each of `steps` training steps of one run (resumed)."""
    from training import jobs
    from training.config import TrainConfig
    from training.sampling import load_generator

    config = TrainConfig(preset="cpu", data=data, seed=seed, eval_every=0,
                         checkpoint_dir=str(work / f"checkpoints-{seed}"))
    generators = []
    for i, count in enumerate(steps):
        started = time.perf_counter()
        trained = jobs.train(config.replace(max_steps=count, resume=i > 0))
        generators.append(load_generator(f"runs:/{trained.run_id}"))
        progress(f"seed {seed} trained to {count:,} steps ({time.perf_counter() - started:.0f} s)")
    return generators


def features(generator, classifier, n: int, seed) -> np.ndarray:
    """The evaluator's features (n, 128) of n samples from the latents of `seed`."""
    from training.sampling import latents, render

    return classifier.features_and_probabilities(render(generator, latents(n, generator.input_shape[-1],
                                                                           seed)))[0]


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.min(values)), "max": float(np.max(values))}


def tally(truth_gain: float, decisions: list[dict], min_fid_gain: float = 0.0) -> dict:
    """One pair's decisions over the seeds, each {"promoted", "gain", "lower_bound", "bootstrap_std"}:
    the promotions, the wrong ones (of a challenger whose true gain is not above `min_fid_gain`), and the
    spread of the gains, of their lower bounds and of the bootstrap's std."""
    promoted = sum(d["promoted"] for d in decisions)
    return {"seeds": len(decisions), "promoted": promoted,
            "wrong": promoted if truth_gain <= min_fid_gain else 0,
            **{key: spread([d[key] for d in decisions]) for key in ("gain", "lower_bound", "bootstrap_std")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)),
                        help="training steps of the early, middle and late generators")
    parser.add_argument("--seeds", type=int, default=20, help="latent seeds 0..S-1 of noise and calibration")
    parser.add_argument("--samples", default="2000,10000", help="the Ns of the noise")
    parser.add_argument("--pair-samples", type=int, default=10_000, help="N of each head-to-head")
    parser.add_argument("--truth-samples", type=int, default=50_000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the cost")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    if len(steps) != len(STEPS):
        parser.error(f"--steps takes {len(STEPS)} step counts")
    data = str(Path(args.data).resolve()) if Path(args.data).is_file() else args.data
    work = Path(tempfile.mkdtemp(prefix="promotion-noise-"))
    try:
        os.chdir(work)  # where the scratch store's artifacts go (./mlruns)
        measure(args, data, steps, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, data: str, steps: list[int], work: Path) -> None:
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    began, load_before, stages = time.perf_counter(), os.getloadavg(), {}

    def stage(name: str) -> None:
        stages[name] = round(time.perf_counter() - began - sum(stages.values()))

    from training import evaluation, head_to_head, metrics
    from training.data import load_mnist
    from training.jobs.artifacts import evaluator
    from training.promotion import PromotionRule

    mnist = load_mnist(data)
    classifier = evaluator(mnist, None)
    generators = {(0, i): g for i, g in enumerate(train(data, 0, steps, work))}
    generators[1, 2] = train(data, 1, steps[2:], work)[0]
    stage("train")

    def label(key: tuple[int, int]) -> str:
        return f"seed {key[0]}, {steps[key[1]]:,} steps"

    # the test split's Gaussian: the same at every N and seed (real_reference caches its features)
    real = metrics.gaussian(evaluation.real_reference(classifier, mnist, args.pair_samples, 0)[0])
    seeds = range(args.seeds)

    noise = []
    for n in (int(s) for s in args.samples.split(",")):
        fids = [metrics.frechet_distance_between(real, metrics.gaussian(
            features(generators[NOISE_GENERATOR], classifier, n, seed))) for seed in seeds]
        noise.append({"samples": n, "seeds": args.seeds, "fid": spread(fids)})
        progress(f"noise at N = {n:,}: FID {np.mean(fids):.3f} +- {noise[-1]['fid']['std']:.3f}")
    stage("noise")

    truth_features = {key: features(g, classifier, args.truth_samples, TRUTH_SEED)
                      for key, g in generators.items() if key in {k for p in PAIRS for k in p[1:]}}
    truth = {key: metrics.frechet_distance_between(real, metrics.gaussian(f))
             for key, f in truth_features.items()}
    progress(f"truth at N = {args.truth_samples:,}: "
             + ", ".join(f"{label(key)} {fid:.3f}" for key, fid in truth.items()))
    pairs = []
    for name, challenger, champion in PAIRS:
        if name == "near tie" and truth[challenger] < truth[champion]:
            challenger, champion = champion, challenger
        replicates = metrics.fid_gain_replicates(real, truth_features[champion], truth_features[challenger],
                                                 TRUTH_REPLICATES, 0)
        pairs.append({"pair": name, "challenger": label(challenger), "champion": label(champion),
                      "truth_challenger_fid": truth[challenger], "truth_champion_fid": truth[champion],
                      "truth_gain": truth[champion] - truth[challenger],
                      "truth_gain_std": float(np.std(replicates)), "keys": (challenger, champion)})
    del truth_features
    stage("truth")

    rule = PromotionRule(0.0, 0, 0, args.confidence)
    decisions: dict[str, list[dict]] = {p["pair"]: [] for p in pairs}
    for seed in seeds:
        line = []
        for p in pairs:
            challenger, champion = (generators[key] for key in p["keys"])
            h = head_to_head.score(challenger, champion, mnist, classifier, n=args.pair_samples, seed=seed)
            promoted, _ = rule.decide(h.challenger, h.champion, h.gain)
            decisions[p["pair"]].append({"promoted": promoted, "gain": h.gain.estimate,
                                         "lower_bound": h.gain.lower_bound(args.confidence),
                                         "bootstrap_std": float(np.std(h.gain.replicates))})
            line.append(f"{p['pair']} gain {h.gain.estimate:+.3f} ({'promoted' if promoted else 'refused'})")
        progress(f"calibration, latent seed {seed}: " + "; ".join(line))
    for p in pairs:
        del p["keys"]
        p |= tally(p["truth_gain"], decisions[p["pair"]], rule.min_fid_gain)
    stage("calibration")

    late, middle = generators[0, 2], generators[0, 1]
    paired = [features(g, classifier, args.pair_samples, 0) for g in (middle, late)]
    runs = {"head_to_head": lambda: head_to_head.score(late, middle, mnist, classifier, args.pair_samples, 0),
            "evaluate": lambda: evaluation.evaluate(late, mnist, classifier, args.pair_samples),
            "bootstrap": lambda: metrics.fid_gain_replicates(real, *paired, head_to_head.REPLICATES, 0)}
    times: dict[str, list[float]] = {key: [] for key in runs}
    for round_ in range(args.rounds):  # taking turns, so that drift on the shared cores hits all three
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            times[key].append(round(time.perf_counter() - started, 2))
        progress(f"cost, round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    stage("cost")

    print(json.dumps({"promotion_noise": {
        "generators": {"preset": "cpu", "steps": steps, "noise": label(NOISE_GENERATOR)},
        "noise": noise,
        "calibration": {"samples": args.pair_samples, "truth_samples": args.truth_samples,
                        "confidence": args.confidence, "replicates": head_to_head.REPLICATES,
                        "min_fid_gain": rule.min_fid_gain, "pairs": pairs},
        "cost": {"samples": args.pair_samples, "replicates": head_to_head.REPLICATES, "rounds": args.rounds,
                 **{f"{key}_s": statistics.median(v) for key, v in times.items()},
                 **{f"{key}_s_rounds": v for key, v in times.items()}},
        "stages_s": stages,
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]}}}))


if __name__ == "__main__":
    main()
