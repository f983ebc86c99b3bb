"""The CPU benchmarks' results as Markdown tables, written into docs/BENCHMARKS.md between two markers."""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- cpu-benchmarks:start (written by make bench) -->", "<!-- cpu-benchmarks:end -->"
SEED_GOAL, SMALL_GOAL = 1.0, 2.0  # speedups over the seed loop asked for at presets seed and small
OVERHEAD_GOAL_S = EVALUATION_GOAL_S = 60
SERVING_GOAL = 1.2  # MLServer's p50 at most this many times mlflow models serve's
# Promotion: wrong promotions of the near tie at most this many (of 20 seeds), the large gain always
# promoted, and a head-to-head no dearer than one evaluation at the same N
NEAR_TIE_WRONG_GOAL, HEAD_TO_HEAD_COST_GOAL = 1, 1.0


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def throughput(rows: list[dict]) -> str:
    table = _table(
        ["backend", "preset", "batch", "precision", "seed loop s/step", "project s/step",
         "G-step images/s (loop / project)", "speedup median (min-max)",
         "GFLOP/s (loop / project)", "share of fp32 peak (loop / project)", "fp32 peak GFLOP/s"],
        [[r["backend"], r["preset"], r["batch"], r["precision"], r["seed_loop_s_per_step"],
          r["project_s_per_step"],
          f"{r['seed_loop_g_images_per_s']:,.0f} / {r['project_g_images_per_s']:,.0f}",
          f"**{r['speedup_median']:.2f}x** ({r['speedup_min']:.2f}-{r['speedup_max']:.2f})",
          f"{r['seed_loop_gflop_per_s']:.0f} / {r['project_gflop_per_s']:.0f}",
          f"{r['seed_loop_share_of_peak']:.0%} / {r['project_share_of_peak']:.0%}",
          r.get("cpu_fp32_peak_gflop_per_s", "")] for r in rows])
    goals = []
    for r in rows:
        goal = {"seed": SEED_GOAL, "small": SMALL_GOAL}.get(r["preset"])
        if goal:
            goals.append(f"- {r['backend']}, `{r['preset']}`: goal {goal:g}x, measured "
                         f"{r['speedup_median']:.2f}x: {_verdict(r['speedup_median'] >= goal)}")
    return table + "\n\n" + "\n".join(goals)


def data_parallel(rows: list[dict]) -> str:
    return _table(["backend", "preset", "global batch", "precision", "devices", "s/step", "real images/s",
                   "speed-up over 1 device"],
                  [[r["backend"], r["preset"], r["batch"], r["precision"], r["device"], r["s_per_step"],
                    f"{r['real_images_per_s']:,.0f}", f"{r['speedup_vs_1_device']:.2f}x"] for r in rows])


def sweep(rows: list[dict]) -> str:
    return _table(["trials", "workers", "wall s", "trials per hour"],
                  [[r["trials"], r["workers"], r["seconds"], f"**{r['trials_per_hour']:.0f}**"]
                   for r in rows])


QUALITY_COLUMNS = ("fid", "classifier_score", "classes_covered", "recall", "precision", "kid")


GOAL_FID, GOAL_CLASSIFIER_SCORE, GOAL_CURVE_SHARE = 10.0, 9.0, 0.05  # at the last mark, averaged G
# The CPU preset against the others: its FID by the last mark, its FID ratio to the tutorial's at every
# mark, and the mark from which it covers all 10 classes
CPU_GOAL_FID, CPU_GOAL_RATIO, CPU_GOAL_CLASSES_FROM = 30.0, 3.0, 5.0


def presets(results: dict) -> str:
    """Each preset's exported generator (its step's average) and the tutorial's, mark by mark."""
    def rows_of(name: str) -> list[dict]:
        run = results[name]
        if name == "tutorial":
            return run["tutorial"]
        return run["project"][f"ema_{run['project_recipe']['ema_decay']:g}"]

    def label(name: str) -> str:
        if name == "tutorial":
            return "TF DCGAN tutorial (batch 256, Adam 1e-4, 1 D : 1 G)"
        r = results[name]["project_recipe"]
        return (f"`{name}` (batch {r['batch_size']}, Adam {r['learning_rate']:g}, {r['n_iter_d']} D : "
                f"{r['n_iter_g']} G, {r['precision']}, EMA {r['ema_decay']:g})")

    names = list(results)
    rows = [[mark["minutes"], label(name), f"{row['steps']:,}", row["epochs"], f"**{row['fid']:.1f}**",
             row["classifier_score"], row["classes_covered"], row["recall"], row["precision"]]
            for i, mark in enumerate(rows_of(names[0])) for name in names
            for row in [rows_of(name)[i]]]
    any_run = results[names[0]]
    rows.append(["-", f"real training images (reference, N = {any_run['samples']:,})", "-", "-",
                 *(any_run["reference"][c] for c in ("fid", "classifier_score", "classes_covered", "recall",
                                                     "precision"))])
    table = _table(["minutes", "recipe (the generator it exports)", "steps", "epochs", "FID (lower better)",
                    "classifier score", "classes covered", "recall", "precision"], rows)
    if "cpu" not in results or "tutorial" not in results:
        return table
    cpu, tutorial = rows_of("cpu"), rows_of("tutorial")
    last = cpu[-1]
    ratios = [theirs["fid"] / mine["fid"] for mine, theirs in zip(cpu, tutorial)]
    covered = [row for row in cpu if row["minutes"] >= CPU_GOAL_CLASSES_FROM]
    goals = [
        (f"- `cpu` by {last['minutes']:g} min: FID <= {CPU_GOAL_FID:g}, measured {last['fid']:.1f}: "
         f"{_verdict(last['fid'] <= CPU_GOAL_FID)}"),
        f"- `cpu` against the tutorial, FID at least {CPU_GOAL_RATIO:g}x lower at every mark: "
        + ", ".join(f"{r:.1f}x" for r in ratios) + f": {_verdict(min(ratios) >= CPU_GOAL_RATIO)}",
        f"- `cpu` covers all 10 classes from {CPU_GOAL_CLASSES_FROM:g} min: "
        + ", ".join(f"{row['classes_covered']:.0f} at {row['minutes']:g} min" for row in covered)
        + f": {_verdict(all(row['classes_covered'] == 10 for row in covered))}"]
    return table + "\n\nGoals:\n" + "\n".join(goals)


def ema_decay(results: dict) -> str:
    """The quality table of a run that compares the average's decays (no goals: they are `quality`'s)."""
    table = quality(results, goals=False)
    project = results["project"]
    averages = sorted(name for name in project if name != "raw")
    marks = []
    for i, raw in enumerate(project["raw"]):
        lowest = min(project[name][i]["fid"] for name in averages)
        best = [name.removeprefix("ema_") for name in averages if project[name][i]["fid"] == lowest]
        which = "all the same" if len(best) == len(averages) else " and ".join(best)
        marks.append(f"{raw['minutes']:g} min ({raw['steps']:,} steps): {which} ({lowest:.1f}; raw G "
                     f"{raw['fid']:.1f})")
    return table + "\n\nLowest FID of the averages at each mark: " + ", ".join(marks) + "."


def quality(results: dict, goals: bool = True) -> str:
    recipe = results["project_recipe"]
    project, tutorial = results["project"], results.get("tutorial")
    steps_ema = f"ema_{recipe['ema_decay']:g}"
    setting = (f"`{recipe['preset']}`, batch {recipe['batch_size']}, {recipe['precision']}, "
               f"{recipe['backend']}")

    def label(name: str) -> str:
        if name == "raw":
            return f"project, raw G ({setting})"
        where = "the step's, the default" if name == steps_ema else "kept on the host"
        return f"project, EMA {name.removeprefix('ema_')} ({where})"

    names = ["raw", steps_ema, *sorted(n for n in project if n not in ("raw", steps_ema))]
    rows = []
    for i, mark in enumerate(project["raw"]):
        for name in names:
            row = project[name][i]
            rows.append([mark["minutes"], label(name), row["steps"], row["epochs"],
                         *(row[c] for c in QUALITY_COLUMNS)])
        if tutorial:
            row = tutorial[i]
            rows.append([row["minutes"], "TF DCGAN tutorial (batch 256, Adam 1e-4)", row["steps"],
                         row["epochs"], *(row[c] for c in QUALITY_COLUMNS)])
    rows.append(["-", f"real training images (reference, N = {results['samples']:,})", "-", "-",
                 *(results["reference"][c] for c in QUALITY_COLUMNS)])
    table = _table(["minutes", "generator", "steps", "epochs", "FID (lower better)", "classifier score",
                    "classes covered", "recall", "precision", "KID"], rows)
    if not goals:
        return table
    averaged, raw = project[steps_ema], project["raw"]
    goals = []
    if tutorial:
        goals.append("Goal (the project beats the tutorial on FID and classifier score, all 10 classes):")
        for mine, theirs in zip(averaged, tutorial):
            met = (mine["fid"] < theirs["fid"] and mine["classifier_score"] > theirs["classifier_score"]
                   and mine["classes_covered"] == 10)
            goals.append(f"- {mine['minutes']:g} min: FID {mine['fid']:.1f} vs {theirs['fid']:.1f}, "
                         f"classifier score {mine['classifier_score']:.2f} vs "
                         f"{theirs['classifier_score']:.2f}, {mine['classes_covered']:.0f} classes: "
                         f"{_verdict(met)}")
    last = averaged[-1]
    met = (last["fid"] <= GOAL_FID and last["classifier_score"] >= GOAL_CLASSIFIER_SCORE
           and last["classes_covered"] == 10)
    goals.append(f"\nGoal at {last['minutes']:g} min (averaged G, the default): FID <= {GOAL_FID:g}, "
                 f"classifier score >= {GOAL_CLASSIFIER_SCORE:g}, all 10 classes: FID {last['fid']:.1f}, "
                 f"classifier score {last['classifier_score']:.2f}, {last['classes_covered']:.0f} classes: "
                 f"{_verdict(met)}")
    pairs = ", ".join(f"{a['fid']:.1f} vs {r['fid']:.1f}" for a, r in zip(averaged, raw))
    never_worse = all(a["fid"] <= r["fid"] for a, r in zip(averaged, raw))
    goals.append(f"- the average never worse than the raw G (FID) at any mark: {pairs}: "
                 f"{_verdict(never_worse)}")
    if "curve_share" in last:
        shares = [row["curve_share"] for row in averaged]
        point_s = [row["curve_point_s"] for row in averaged]
        goals.append(
            f"\nThe FID curve's cost: one point (the averaged and the raw G, {recipe['eval_samples']:,} "
            f"samples each) takes {min(point_s):.1f}-{max(point_s):.1f} s; every {recipe['eval_every']} "
            f"epochs that is {100 * max(shares):.2f} % of training time at most "
            f"(goal < {100 * GOAL_CURVE_SHARE:g} %): {_verdict(max(shares) < GOAL_CURVE_SHARE)}")
    return table + "\n\n" + "\n".join(goals)


def jobs(results: dict) -> str:
    rows = [[j["job"], j["wall_s"], j["train_s"], f"**{j['overhead_s']}**", j["evaluation_s"],
             (f"overhead {_verdict(j['overhead_s'] < OVERHEAD_GOAL_S)}, evaluation "
             f"{_verdict(j['evaluation_s'] < EVALUATION_GOAL_S)}")] for j in results["jobs"]]
    p = results["params"]
    return (f"Parameters: preset `{p['preset']}`, {p['train_images']:,} training images, "
            f"{p['epochs']} epoch, batch {p['batch_size']}, {p['samples']:,} evaluation samples.\n\n"
            + _table(["job", "wall s", "training s (logged)", "overhead s",
                      f"evaluation of {p['samples']:,} s", f"goals (< {OVERHEAD_GOAL_S} s each)"], rows))


def serving(results: dict) -> str:
    """Each cell "mlflow models serve / MLServer"; the goal is MLServer's p50 against mlflow's, row by row."""
    # results from before the serving image was measured: mlflow models serve alone, its rows at the top
    servers = results.get("servers") or [{"name": "mlflow models serve", **results}]
    both = len(servers) > 1
    rows, ratios = [], []
    for same in zip(*(server["rows"] for server in servers)):
        first = same[0]
        ratios.append((first, same[-1]["p50_ms"] / first["p50_ms"]))
        rows.append(["latency" if first["clients"] == 1 else "concurrent", first["images_per_request"],
                     first["clients"], first["requests"],
                     *(" / ".join(str(row[key]) for row in same)
                       for key in ("p50_ms", "p99_ms", "max_ms", "requests_per_s", "errors")),
                     *([f"**{ratios[-1][1]:.2f}x**"] if both else [])])
    latency = _table(["load", "images / request", "clients", "requests each", "p50 ms", "p99 ms", "max ms",
                      "requests/s", "errors", *(["p50 MLServer / mlflow"] if both else [])], rows)
    memory = ("processes", "rss_mib", "peak_rss_sum_mib", "cgroup_peak_mib")
    about = _table(["server", "versions", "ready after s", "processes", "RSS after the load MiB",
                    "sum of each process's peak RSS MiB", "container's cgroup peak MiB"],
                   [[server["name"], ", ".join(f"{k} {v}" for k, v in server.get("versions", {}).items()),
                     server["ready_s"], *(server.get("memory", {}).get(key, "-") for key in memory)]
                    for server in servers])
    text = (f"Model `{results['model_uri']}`"
            + (f", image `{results['image']}`" if "image" in results else "")
            + (f", {results['rounds']} rounds per row" if "rounds" in results else "")
            + f".\n\n{latency}\n\n{about}")
    cgroup = next((s["memory"]["cgroup_file"] for s in servers if "cgroup_file" in s.get("memory", {})), None)
    if cgroup:
        text += (f"\n\nMemory: each server's process tree read from /proc the same way for both (the "
                 "`mlflow` command and its uvicorn; MLServer's processes in the container), and the "
                 f"container's cgroup peak (`{cgroup}`). The cgroup counts page cache but charges a page to "
                 "the cgroup that first read it, so libraries already cached on the host by an earlier run "
                 "count in the processes' RSS but not in the cgroup: its peak depends on what ran before and "
                 "can be below the RSS.")
    if both:
        errors = sum(row["errors"] for server in servers for row in server["rows"])
        met = errors == 0 and all(ratio <= SERVING_GOAL for _, ratio in ratios)
        text += (f"\n\nGoal (MLServer's p50 within {SERVING_GOAL:g}x of `mlflow models serve`'s in every "
                 "row, no errors), MLServer / mlflow p50 at images x clients: "
                 + ", ".join(f"{row['images_per_request']} x {row['clients']} {ratio:.2f}x"
                             for row, ratio in ratios)
                 + f"; {errors} errors: {_verdict(met)}")
    return text


def promotion_noise(results: dict) -> str:
    """FID's spread over latent seeds, the rule's decisions against a large-N truth, and what it costs."""
    g, c, cost = results["generators"], results["calibration"], results["cost"]
    noise = _table(["N", "latent seeds", "FID mean", "FID std", "min - max"],
                   [[f"{row['samples']:,}", row["seeds"], f"{row['fid']['mean']:.3f}",
                     f"**{row['fid']['std']:.3f}**", f"{row['fid']['min']:.3f} - {row['fid']['max']:.3f}"]
                    for row in results["noise"]])
    pairs = c["pairs"]
    calibration = _table(
        ["pair", "challenger / champion", f"truth FID, challenger / champion (N = {c['truth_samples']:,})",
         "truth gain (its bootstrap std)", f"gain at N = {c['samples']:,}: mean (std over seeds)",
         "bootstrap std (mean)", "lower bound: mean (min - max)", "promoted", "wrong promotions"],
        [[p["pair"], f"{p['challenger']} / {p['champion']}",
          f"{p['truth_challenger_fid']:.3f} / {p['truth_champion_fid']:.3f}",
          f"{p['truth_gain']:+.3f} ({p['truth_gain_std']:.3f})",
          f"{p['gain']['mean']:+.3f} ({p['gain']['std']:.3f})", f"{p['bootstrap_std']['mean']:.3f}",
          (f"{p['lower_bound']['mean']:+.3f} ({p['lower_bound']['min']:+.3f} - "
           f"{p['lower_bound']['max']:+.3f})"),
          f"**{p['promoted']} of {p['seeds']}**", f"{p['wrong']} of {p['seeds']}"] for p in pairs])
    steps = (("head_to_head", "`head_to_head.score`: two generators, the bootstrap"),
             ("evaluate", "`evaluation.evaluate`: one generator, every metric"),
             ("bootstrap", f"the bootstrap alone ({cost['replicates']} replicates)"))
    costs = _table([f"N = {cost['samples']:,}", "median s", f"each of {cost['rounds']} rounds, s"],
                   [[what, f"**{cost[key + '_s']:.1f}**",
                     " / ".join(f"{s:.1f}" for s in cost[key + "_s_rounds"])] for key, what in steps])
    by_name = {p["pair"]: p for p in pairs}
    tie, large = by_name["near tie"], by_name["large gain"]
    ratio = cost["head_to_head_s"] / cost["evaluate_s"]
    goals = [
        (f"- near tie: at most {NEAR_TIE_WRONG_GOAL} wrong promotion in {tie['seeds']}, measured "
         f"{tie['wrong']}: {_verdict(tie['wrong'] <= NEAR_TIE_WRONG_GOAL)}"),
        (f"- large gain promoted {large['seeds']} of {large['seeds']}, measured {large['promoted']}: "
         f"{_verdict(large['promoted'] == large['seeds'])}"),
        (f"- a head-to-head costs no more than one evaluation at the same N: {cost['head_to_head_s']:.1f} s "
         f"against {cost['evaluate_s']:.1f} s ({ratio:.2f}x): {_verdict(ratio <= HEAD_TO_HEAD_COST_GOAL)}")]
    load, stages = results.get("load_average"), results.get("stages_s", {})
    return (f"Generators: preset `cpu`, trained to {', '.join(f'{s:,}' for s in g['steps'])} steps (seed 0) "
            f"and to {g['steps'][-1]:,} (seed 1). Noise: the generator of {g['noise']}.\n\n{noise}\n\n"
            f"Calibration: `PromotionRule(min_fid_gain={c['min_fid_gain']:g}, "
            f"confidence={c['confidence']:g})`, {c['replicates']} bootstrap replicates, one head-to-head per "
            f"latent seed.\n\n{calibration}\n\n{costs}\n\n"
            + ("Stages: " + ", ".join(f"{k} {v} s" for k, v in stages.items()) if stages else "")
            + (f"; load average before / after {load['before'][0]:.1f} / {load['after'][0]:.1f}"
               if load else "") + ".\n\nGoals:\n" + "\n".join(goals))


def render(results: dict) -> str:
    m, seconds = results["machine"], results.get("seconds", {})
    parts = [START, "## 2 CPU cores: `make bench` (written by `benchmarks/run_all.py`)", "",
             (f"Run on {m['date']}: {_cpu(m)}, {m['cores']} cores, {m['memory_gib']} GiB; "
              f"Python {m['python']}, tensorflow {m.get('tensorflow') or m.get('tensorflow-cpu')}, "
              f"keras {m['keras']}, jax {m['jax']}, mlflow {m['mlflow']}, "
              f"kfp {m['kfp']}. Raw results: [`benchmarks-cpu.json`](benchmarks-cpu.json)."),
             "", "```bash",
             "make bench        # = python -m benchmarks.run_all --data mnist.npz (a local copy, or the URL)",
             "```", "",
             "Wall time per part: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
             + f"; in all {sum(seconds.values()) / 60:.1f} min.", ""]
    sections = (("throughput", "### Throughput: the project's compiled step against the seed post's loop",
                 throughput,
                 ("One step = 1 D + 5 G updates at batch 128, fp32. Rounds alternate loop / project after "
                  "one warm-up step each; the speedup is the ratio per round pair. FLOPs per step are "
                  "counted from the layers (`benchmarks/flops.py`); the fp32 peak is the backend's best "
                  "large matrix product on this machine, measured in the same process.")),
                ("data_parallel", "### Data-parallel step on virtual CPU devices (`--devices`, JAX)",
                 data_parallel,
                 ("The same global batch split across 1, 2 and 4 devices that XLA makes of the one CPU "
                  "(`--xla_force_host_platform_device_count`); they share the 2 cores, so this proves the "
                  "path (replicated state, split batch, all-reduced gradients), not a speed-up. Rounds "
                  "alternate between the device counts after one warm-up step each.")),
                ("sweep", "### Local sweeps: trials per hour (`mnist-gan sweep --workers N`)", sweep,
                 ("A whole sweep of 4 trials (seeds 0-3; each "
                  "`--preset tiny --train-images 2048 --epochs 2`, 1,000 evaluated samples) as a user runs "
                  "it: every trial in its own process (TensorFlow start-up included), then ranking, "
                  "registration and promotion, against a fresh sqlite store. Two workers share the same 2 "
                  "cores.")),
                ("presets", "### The presets per minute of training: which one the quickstart uses", presets,
                 ("Each preset trains from scratch with its own recipe (`training/config.py`, "
                  "`PRESET_RECIPES`), one after the other and alone on the 2 cores, in float32; at each mark "
                  "of wall-clock training time (compilation included, evaluation excluded) the generator "
                  "the run would export (its step's moving average) is scored on 10,000 samples by the "
                  "project's evaluator, against the 10,000 test images.")),
                ("quality", "### Sample quality per minute of training", quality,
                 ("Wall-clock training time (compilation included, evaluation excluded), each recipe alone "
                  "on the 2 cores; the project's evaluator scores 10,000 samples against the 10,000 test "
                  "images. One training run gives the raw G's rows and the averages' (the average never "
                  "feeds back into training).")),
                ("ema_decay", "### The average's decay, where minutes are thousands of steps (preset `tiny`)",
                 ema_decay,
                 ("The same benchmark with the `tiny` preset, its step being ~20x cheaper: the averages of "
                  "several decays kept beside the step's, scored at the same marks. Under its warm-up, "
                  "min(decay, (1 + t) / (10 + t)), every decay of 0.99 and above is the same average for the "
                  "first ~900 steps, so only a run of thousands of steps tells them apart.")),
                ("jobs", "### What the jobs cost around training", jobs,
                 ("Overhead = wall time of the whole command minus the `train_seconds` its training run "
                  "logged: process start-ups, data, evaluation, reports, registration and promotion. The "
                  "main job runs first and scores the real-data reference of its evaluation; the pipeline "
                  "then finds it cached (it depends only on the evaluator's weights, the data, N and the "
                  "seed).")),
                ("serving", "### Serving: `mlflow models serve` against the serving image (MLServer)",
                 serving,
                 ("One registered generator, the jobs part's champion, downloaded once with MLmodel at the "
                  "folder's top as KServe's storage initializer leaves it, and served from that folder by "
                  "`mlflow models serve --env-manager local` (POST /invocations, `dataframe_split` with "
                  "columns seed, n) and by the serving image under podman, the folder read-only at "
                  "/mnt/models (POST /v2/models/mnist-gan/infer, V2 inputs seed and n as INT64, content type "
                  "`pd`), both bound to 127.0.0.1. Each row: 5 warm-up requests to each, then the two take "
                  "turns in rounds, so that drift on the shared cores hits both; the client threads run on "
                  "the same 2 cores. Every answer is checked for status 200 and n images of 28 x 28 (V2: one "
                  "UINT8 output of shape [n, 28, 28]). Command: `make bench "
                  "BENCH_PARTS=jobs,serving` (`benchmarks/serving_latency.py`). Each cell: `mlflow models "
                  "serve` / MLServer.")),
                ("promotion_noise", "### Promotion: noise, calibration and cost", promotion_noise,
                 ("How far a generator's FID moves with the latents alone, whether promotion's rule "
                  "(`training/promotion.py`: the challenger's FID gain over the champion, head to head on "
                  "the same latents, must exceed `min_fid_gain` at the paired bootstrap's lower bound) "
                  "promotes what a large evaluation says is better and only that, and what the "
                  "head-to-head costs. Noise: FID of one generator (render, the evaluator's features, "
                  "Fréchet distance to the test split's Gaussian) over latent seeds 0, 1, .... Calibration: "
                  "three pairs whose truth is the FID of each generator on many more latents (the same for "
                  "all) against the same test split: a near tie (two trainings of seeds 0 and 1, equally "
                  "long: moments of one training 100 steps apart are no tie, the later better by about 3 "
                  "times the noise of their paired gain), a small gain (one training, 100 steps later) and "
                  "a large gain (a short and a long training). The near tie's challenger is the one the "
                  "truth says is not better, so any promotion there is wrong. Each pair is scored by "
                  "`head_to_head.score` on each latent seed and judged by `PromotionRule.decide`. Cost: "
                  "a head-to-head (its reference cached, as in a promotion) against `evaluation.evaluate` "
                  "at the same N, and the bootstrap alone; medians of rounds that take turns. Command: "
                  "`make bench BENCH_PARTS=promotion_noise` (`benchmarks/promotion_noise.py`).")))
    for key, title, render_part, how in sections:
        if key in results:
            own = results.get("machines", {}).get(key, m)
            if (own["date"], _cpu(own)) != (m["date"], _cpu(m)):
                how += f" Measured on {own['date']} on another machine: {_cpu(own)}, {own['cores']} cores."
            parts += [title, "", how, "", render_part(results[key]), ""]
    return "\n".join(parts + [END])


def _cpu(machine: dict) -> str:
    """The CPU and the widest vector instructions it has: the same name can hide AVX2 or AVX-512."""
    names = {"avx512_bf16": "AVX-512 with BF16", "avx512f": "AVX-512", "avx2": "AVX2"}
    isa = names.get(machine.get("isa"))
    if isa and machine.get("isa_capped_from"):
        return (f"{machine['cpu']} ({names.get(machine['isa_capped_from'])}, kernels capped at {isa} with "
                "ONEDNN_MAX_CPU_ISA to stand in for an AVX2 CPU)")
    return f"{machine['cpu']} ({isa})" if isa else machine["cpu"]


def write_section(markdown: Path, section: str) -> None:
    """Replace the text between the markers (or append it) and keep everything else."""
    text = markdown.read_text() if markdown.is_file() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    markdown.write_text(text)
