"""The reports a person reads, as Markdown (with PNGs beside it) and one HTML file: an evaluation's
(sample grid, nearest real neighbours, class histogram and the metrics table against the real-data
reference) and a promotion's (champion and challenger side by side, scored head to head)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training import plots
from training.evaluation import Evaluation, nearest_training_images
from training.metrics import HEADLINE, LOWER_IS_BETTER

if TYPE_CHECKING:
    from training.promotion import Decision

NEIGHBOUR_SAMPLES = 8


def write_report(evaluation: Evaluation, x_train: np.ndarray, directory: Path, title: str) -> list[Path]:
    """Write grid.png, neighbours.png, histogram.png, report.md and report.html; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    samples = evaluation.samples
    plots.grid(samples[:64], caption=f"{evaluation.n} samples, first 64").save(directory / "grid.png")
    _neighbours_picture(samples[:NEIGHBOUR_SAMPLES], x_train).save(directory / "neighbours.png")
    _histogram_plot(evaluation, directory / "histogram.png")
    table = metrics_table(evaluation)
    markdown = "\n".join([
        f"# {title}", "",
        "| metric | generator | real reference | better |", "| --- | --- | --- | --- |",
        *(f"| {name} | {ours} | {ref} | {better} |" for name, ours, ref, better in table), "",
        "## Samples", "", "![samples](grid.png)", "",
        "## Nearest training images", "",
        ("Each row: a sample, then its 3 nearest training images (pixel distance). Copies would show "
         "as identical pairs."), "", "![neighbours](neighbours.png)", "",
        "## Classes", "", "![histogram](histogram.png)", "",
        "| class | " + " | ".join(str(c) for c in range(10)) + " |",
        "| --- |" + " --- |" * 10,
        "| samples | " + " | ".join(str(v) for v in evaluation.histogram) + " |",
        "| reference | " + " | ".join(str(v) for v in evaluation.reference_histogram) + " |", "",
    ])
    (directory / "report.md").write_text(markdown)
    (directory / "report.html").write_text(_html(title, table, directory))
    return [directory / n for n in ("grid.png", "neighbours.png", "histogram.png", "report.md",
                                    "report.html")]


def metrics_table(evaluation: Evaluation) -> list[tuple[str, str, str, str]]:
    rows = []
    for name in HEADLINE:
        ours, ref = evaluation.metrics[name], evaluation.reference[name]
        if name == "kid":
            cell = f"{ours:.4f} ± {evaluation.metrics['kid_stderr']:.4f}"
            ref_cell = f"{ref:.4f} ± {evaluation.reference['kid_stderr']:.4f}"
        else:
            cell, ref_cell = _format(ours), _format(ref)
        rows.append((name, cell, ref_cell, "lower" if name in LOWER_IS_BETTER else "higher"))
    return rows


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def _neighbours_picture(samples: np.ndarray, x_train: np.ndarray):
    nearest = nearest_training_images(samples, x_train, k=3)
    rows = [np.concatenate([samples[i][None], x_train[nearest[i]]]) for i in range(len(samples))]
    return plots.grid(np.concatenate(rows), columns=4)


def _histogram_plot(evaluation: Evaluation, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(7, 3))
    classes = np.arange(10)
    total, ref_total = sum(evaluation.histogram), sum(evaluation.reference_histogram)
    axis.bar(classes - 0.2, np.array(evaluation.histogram) / total, width=0.4, label="samples")
    axis.bar(classes + 0.2, np.array(evaluation.reference_histogram) / ref_total, width=0.4,
             label="real reference")
    axis.set_xticks(classes)
    axis.set_xlabel("class predicted by the MNIST classifier")
    axis.set_ylabel("share")
    axis.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def _html(title: str, table, directory: Path) -> str:
    def image(name: str) -> str:
        data = base64.b64encode((directory / name).read_bytes()).decode()
        return f'<img alt="{name}" src="data:image/png;base64,{data}">'

    rows = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(o)}</td><td>{html.escape(r)}</td>"
                   f"<td>{b}</td></tr>" for n, o, r, b in table)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .8em}"
            "table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><table><tr><th>metric</th><th>generator</th>"
            f"<th>real reference</th><th>better</th></tr>{rows}</table>"
            f"<h2>Samples</h2>{image('grid.png')}<h2>Nearest training images</h2>"
            "<p>Each row: a sample, then its 3 nearest training images (pixel distance).</p>"
            f"{image('neighbours.png')}<h2>Classes</h2>{image('histogram.png')}</body></html>")


def write_decision_report(name: str, decision: Decision, directory: Path) -> list[Path]:
    """The picture of a promotion decided head to head: champion and challenger drawn from the same
    latents side by side (decision.png), with both scores, the FID gain and its bound, in decision.md and
    decision.html; returns their paths."""
    head, scores = decision.head_to_head, decision.scores()
    directory.mkdir(parents=True, exist_ok=True)
    sides = [(f"champion v{decision.champion}", head.champion_grid, head.champion),
             (f"challenger v{decision.challenger}", head.challenger_grid, head.challenger)]
    plots.side_by_side([plots.grid(grid, caption=f"{label}: FID {side['fid']:.2f}")
                        for label, grid, side in sides]).save(directory / "decision.png")
    verdict = "promoted" if decision.promote else "not promoted"
    title = f"{name} version {decision.challenger} against champion version {decision.champion}: {verdict}"
    table = [("FID (lower is better)", f"{head.champion['fid']:.3f}", f"{head.challenger['fid']:.3f}"),
             ("classes covered", f"{head.champion['classes_covered']:g}",
              f"{head.challenger['classes_covered']:g}")]
    resamples = len(head.gain.replicates)
    p_value = f"p = {scores['p_value']:.3f}" if scores["p_value"] >= 0.001 else "p < 0.001"
    gain = (f"FID gain {scores['fid_gain']:.3f}; with {scores['confidence']:.0%} confidence at least "
            f"{scores['fid_gain_lower']:.3f} ({p_value} against min_fid_gain {decision.rule.min_fid_gain:g}, "
            f"{resamples} bootstrap resamples)")
    setting = (f"Both scored on the same {head.samples} latents (seed {head.seed}) by the same evaluator "
               f"(weights sha256 {head.evaluator_sha256[:12]}), against MNIST's test split.")
    markdown = "\n".join([
        f"# {title}", "", decision.reason, "",
        "| | champion | challenger |", "| --- | --- | --- |",
        *(f"| {a} | {b} | {c} |" for a, b, c in table), "",
        gain, "", setting, "", "![champion and challenger from the same latents](decision.png)", ""])
    (directory / "decision.md").write_text(markdown)
    data = base64.b64encode((directory / "decision.png").read_bytes()).decode()
    rows = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in table)
    (directory / "decision.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:.2em .8em}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(decision.reason)}</p>"
        f"<table><tr><th></th><th>champion</th><th>challenger</th></tr>{rows}</table>"
        f"<p>{html.escape(gain)}</p><p>{html.escape(setting)}</p>"
        f'<img alt="champion and challenger from the same latents" src="data:image/png;base64,{data}">'
        "</body></html>")
    return [directory / n for n in ("decision.png", "decision.md", "decision.html")]
