"""The benchmarks' pieces on tiny sizes: the seed-loop baseline is the post's recipe, the harness
measures both sides, the report keeps what it does not own, and the GPU script's CPU dry run passes."""

from __future__ import annotations

import json
import os
import subprocess
import time

import numpy as np
import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def digits(mnist_path):
    from training.data import load_mnist, to_unit_range

    return to_unit_range(load_mnist(str(mnist_path)).x_train[:512])


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.slow
def test_the_seed_loop_freezes_d_during_g_steps_and_trains_both(digits):
    from benchmarks.seed_loop import SeedGan

    gan = SeedGan(digits, "tiny", batch_size=32)
    d_before, g_before = _weights(gan.D), _weights(gan.G)
    gan.train_G()
    assert all(np.array_equal(a, b) for a, b in zip(d_before, gan.D.get_weights())), "D moved in a G step"
    assert not all(np.array_equal(a, b) for a, b in zip(g_before, gan.G.get_weights()))
    gan.train_D()
    assert not all(np.array_equal(a, b) for a, b in zip(d_before, gan.D.get_weights()))
    d_loss, g_loss = gan.step()
    assert np.isfinite(d_loss).all() and np.isfinite(g_loss).all()


@pytest.mark.slow
def test_the_throughput_harness_times_both_sides(digits):
    from benchmarks.throughput import compare
    from training.config import TrainConfig

    row = compare(TrainConfig(preset="tiny", batch_size=32), digits, rounds=2, steps=2, peak_flops=1e12)
    assert row["seed_loop_s_per_step"] > 0 and row["project_s_per_step"] > 0
    assert row["speedup_min"] <= row["speedup_median"] <= row["speedup_max"]
    assert row["project_gflop_per_s"] == pytest.approx(row["gflop_per_step"] / row["project_s_per_step"],
                                                       rel=0.05)


@pytest.mark.slow
def test_the_quality_harness_scores_the_raw_and_each_averaged_generator(digits):
    from benchmarks import report
    from benchmarks.quality_per_minute import ProjectRecipe, train_to_marks
    from training.config import TrainConfig

    config = TrainConfig(preset="tiny", batch_size=32, precision="float32")
    recipe = ProjectRecipe(digits, config, other_decays=(0.9,))
    probed = []

    def probe(generator, weights):
        probed.append(weights)
        time.sleep(0.05)
        return {}

    def score(sampler):  # a stand-in for the evaluator: the mean pixel of 16 samples tells them apart
        return {"fid": float(sampler(16).mean()) + 1.0, "classifier_score": 9.5, "classes_covered": 10.0,
                "recall": 0.5, "precision": 0.5, "kid": 0.1}

    rows = train_to_marks(recipe, [0.001, 0.002], score, probe)
    assert sorted(rows) == ["ema_0.9", "ema_0.999", "raw"] and all(len(r) == 2 for r in rows.values())
    assert rows["raw"][-1]["fid"] != rows["ema_0.999"][-1]["fid"], "the average differs from the raw G"
    assert (len(probed) == 4 and rows["raw"][0]["curve_point_s"] >= 0.1
            and 0 < rows["raw"][0]["curve_share"] < 1)
    recipe_info = {"preset": "tiny", "batch_size": 32, "precision": "float32", "backend": "tensorflow",
                   "ema_decay": 0.999, "eval_every": 5, "eval_samples": 2000}
    results = {"project_recipe": recipe_info, "project": rows, "samples": 16,
               "reference": {c: 1.0 for c in report.QUALITY_COLUMNS}}
    section = report.quality(results)
    assert ("project, EMA 0.999 (the step's, the default)" in section
            and "project, EMA 0.9 (kept on" in section)
    assert "never worse than the raw G" in section and "The FID curve's cost" in section
    assert "Lowest FID of the averages at each mark: " in report.ema_decay(results)


def test_the_presets_table_judges_the_cpu_preset_against_the_tutorial_mark_by_mark():
    from benchmarks import report

    reference = {c: 1.0 for c in report.QUALITY_COLUMNS}

    def run(preset, fids, classes):
        rows = [{"minutes": m, "steps": 100 * m, "epochs": m / 10, "fid": fid, "classifier_score": 5.0,
                 "classes_covered": c, "recall": 0.5, "precision": 0.5} for m, fid, c in zip(
                     (2.5, 5, 10), fids, classes)]
        if preset == "tutorial":
            return {"tutorial": rows, "samples": 10_000, "reference": reference}
        recipe = {"preset": preset, "batch_size": 64, "learning_rate": 1e-3, "n_iter_d": 1, "n_iter_g": 2,
                  "precision": "float32", "ema_decay": 0.999}
        return {"project": {"ema_0.999": rows}, "project_recipe": recipe, "samples": 10_000,
                "reference": reference}

    results = {"cpu": run("cpu", (60, 40, 25), (9, 10, 10)),
               "tutorial": run("tutorial", (240, 120, 80), (10,) * 3)}
    section = report.presets(results)
    assert "`cpu` (batch 64, Adam 0.001, 1 D : 2 G, float32, EMA 0.999)" in section
    assert "FID <= 30, measured 25.0: met" in section
    assert "4.0x, 3.0x, 3.2x: met" in section, "every mark at least 3x lower"
    assert "10 at 5 min, 10 at 10 min: met" in section, "the 2.5-minute mark is not held to 10 classes"
    results["cpu"] = run("cpu", (60, 41, 31), (10, 9, 10))
    section = report.presets(results)
    assert "measured 31.0: **missed**" in section and "2.9x, 2.6x: **missed**" in section
    assert "9 at 5 min, 10 at 10 min: **missed**" in section


def test_the_report_rewrites_only_its_own_section(tmp_path):
    from benchmarks import report

    page = tmp_path / "BENCHMARKS.md"
    page.write_text("# Benchmarks\n\nGPU figures, written by hand.\n")
    results = {"machine": {"date": "2026-11-28", "cpu": "x", "cores": 2, "memory_gib": 24, "python": "3",
                           "tensorflow": "t", "keras": "k", "jax": "j", "mlflow": "m", "kfp": "f"},
               "seconds": {"serving": 60},
               "serving": {"model_uri": "models:/m@champion", "ready_s": 9.0, "rows": [
                   {"images_per_request": 1, "clients": 1, "requests": 10, "errors": 0, "p50_ms": 5.0,
                    "p99_ms": 9.0, "max_ms": 9.5, "requests_per_s": 100.0}]}}
    report.write_section(page, report.render(results))
    results["serving"]["rows"][0]["p50_ms"] = 6.5
    report.write_section(page, report.render(results))
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nGPU figures, written by hand.\n")
    assert (text.count(report.START) == 1 and "| latency | 1 | 1 | 10 | 6.5 | 9.0 |" in text
            and "| 5.0 |" not in text)


@pytest.mark.slow
def test_the_gpu_check_dry_run_passes_on_the_cpu(tmp_path, mnist_path):
    env = {**os.environ, "OUT": str(tmp_path), "DATA_CPU": str(mnist_path), "TMPDIR": str(tmp_path)}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(report["throughput"]) == 2 and len(report["against_seed_loop"]) == 2
    assert {row["precision"] for row in report["throughput"]} == {"float32", "mixed_bfloat16"}
    assert [row["devices"] for row in report["data_parallel"]] == [1, 2], "gpu_check.sh --cpu makes 2 devices"
    assert report["training"]["imported"]["mlflow"] is False and report["training"]["steps"] == 4


def test_the_promotion_section_counts_wrong_promotions_and_judges_the_three_goals():
    from benchmarks import report
    from benchmarks.promotion_noise import tally

    def pair(name, truth_gain, promotions):
        promoted = [True] * promotions + [False] * (20 - promotions)
        decisions = [{"promoted": p, "gain": truth_gain, "lower_bound": truth_gain - 0.3,
                      "bootstrap_std": 0.2} for p in promoted]
        return {"pair": name, "challenger": "seed 0, 4,200 steps", "champion": "seed 1, 4,200 steps",
                "truth_challenger_fid": 15.9, "truth_champion_fid": 15.9 + truth_gain,
                "truth_gain": truth_gain, "truth_gain_std": 0.1, **tally(truth_gain, decisions)}

    def results(tie_promoted, large_promoted, head_to_head_s):
        return {"generators": {"preset": "cpu", "steps": [500, 4100, 4200], "noise": "seed 0, 4,200 steps"},
                "noise": [{"samples": 2000, "seeds": 20, "fid": {"mean": 16.5, "std": 0.3, "min": 16.0,
                                                                  "max": 17.0}}],
                "calibration": {"samples": 10_000, "truth_samples": 50_000, "confidence": 0.95,
                                "replicates": 500, "min_fid_gain": 0.0, "pairs": [
                                    pair("near tie", -0.1, tie_promoted), pair("small gain", 0.1, 15),
                                    pair("large gain", 46.0, large_promoted)]},
                "cost": {"samples": 10_000, "replicates": 500, "rounds": 1, "head_to_head_s": head_to_head_s,
                         "evaluate_s": 12.0, "bootstrap_s": 4.0, "head_to_head_s_rounds": [head_to_head_s],
                         "evaluate_s_rounds": [12.0], "bootstrap_s_rounds": [4.0]}}

    section = report.promotion_noise(results(1, 20, 11.0))
    assert "| near tie | seed 0, 4,200 steps / seed 1, 4,200 steps |" in section
    assert "| **1 of 20** | 1 of 20 |" in section and "| **15 of 20** | 0 of 20 |" in section, \
        "only a challenger the truth says is not better is promoted wrongly"
    assert "measured 1: met" in section and "measured 20: met" in section and "(0.92x): met" in section
    section = report.promotion_noise(results(2, 19, 13.0))
    assert "measured 2: **missed**" in section and "measured 19: **missed**" in section
    assert "(1.08x): **missed**" in section
