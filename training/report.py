"""The evaluation report a person reads: sample grid, nearest real neighbours, class histogram and the
metrics table against the real-data reference, as Markdown (with PNGs beside it) and one HTML file."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from training import plots
from training.evaluation import Evaluation, nearest_training_images
from training.metrics import HEADLINE, LOWER_IS_BETTER

NEIGHBOUR_SAMPLES = 8


def write_report(evaluation: Evaluation, x_train: np.ndarray, directory: Path, title: str) -> list[Path]:
    """Write grid.png, neighbours.png, histogram.png, report.md and report.html; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    samples = evaluation.samples
    plots.grid(samples[:64], caption=f"{len(samples)} samples, first 64").save(directory / "grid.png")
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
