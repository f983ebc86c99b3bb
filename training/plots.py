"""Pictures a person looks at: sample grids, their animation over epochs, and the loss curves."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 28, 28[, 1]) in [-1, 1] -> (B, 28, 28) uint8 in [0, 255]."""
    images = np.asarray(images, dtype=np.float32).reshape(len(images), 28, 28)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, scale: int = 3, padding: int = 2, caption: str | None = None,
         columns: int | None = None) -> Image.Image:
    """Tile (B, 28, 28) uint8 digits into a grid (square unless `columns` is given), white on black,
    enlarged `scale` times."""
    count = len(images)
    cols = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cell = 28 + padding
    header = 16 if caption else 0
    canvas = np.full((header + rows * cell + padding, cols * cell + padding), 40, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = header + padding + r * cell, padding + c * cell
        canvas[top:top + 28, left:left + 28] = image
    picture = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale),
                                             Image.NEAREST)
    if caption:
        ImageDraw.Draw(picture).text((4 * scale, 2 * scale), caption, fill=255)
    return picture


def save_gif(frames: list[Path], target: Path, seconds_per_frame: float = 0.5) -> None:
    """Animate saved grid PNGs in order; the last frame is held three times as long."""
    pictures = [Image.open(f).convert("P") for f in frames]
    durations = [int(seconds_per_frame * 1000)] * len(pictures)
    durations[-1] *= 3
    pictures[0].save(target, save_all=True, append_images=pictures[1:], duration=durations, loop=0)


def save_loss_curves(history: dict[str, list[tuple[int, float]]], target: Path) -> None:
    """Plot each metric's (step, value) series: losses on one axis, D's outputs on another."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (losses, outputs) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, axis in (("d_loss", losses), ("g_loss", losses), ("d_real", outputs),
                       ("d_fake", outputs), ("d_accuracy", outputs)):
        if history.get(name):
            steps, values = zip(*history[name])
            axis.plot(steps, values, label=name, linewidth=1)
    losses.set_ylabel("binary cross-entropy")
    outputs.set_ylabel("D output / accuracy")
    outputs.set_xlabel("training step (1 D + n_iter_g G updates)")
    for axis in (losses, outputs):
        axis.legend(loc="upper right")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def save_fid_curve(curve: list[dict], target: Path) -> None:
    """The FID curve of a training run, the exported generator's and (when G is averaged) the raw
    one's, against the epoch; the best point is starred. Points as loop.TrainResult.curve holds them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fid, score) = plt.subplots(1, 2, figsize=(10, 3.6))
    epochs = [point["epoch"] for point in curve]
    for prefix, label in (("", "averaged G (EMA)" if "raw_fid" in curve[0] else "G"), ("raw_", "raw G")):
        if f"{prefix}fid" in curve[0]:
            fid.plot(epochs, [p[f"{prefix}fid"] for p in curve], marker="o", markersize=3, label=label)
            score.plot(epochs, [p[f"{prefix}classifier_score"] for p in curve], marker="o", markersize=3,
                       label=label)
    best = min(curve, key=lambda point: point["fid"])
    fid.scatter([best["epoch"]], [best["fid"]], marker="*", s=220, c="tab:orange", zorder=3,
                label=f"best: {best['fid']:.3g} at epoch {best['epoch']}")
    fid.set_yscale("log")
    fid.set_ylabel("FID (lower is better)")
    score.set_ylabel("classifier score (10 = every class, sharp)")
    for axis in (fid, score):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def save_sweep_plot(rows: list[dict], swept: list[str], target: Path) -> None:
    """FID of each finished trial against each swept parameter, one panel per parameter; the winner
    is the star. Rows as sweep.rank makes them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finished = [row for row in rows if row["fid"] is not None]
    panels = swept or ["trial"]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.4), sharey=True,
                             squeeze=False)
    for axis, name in zip(axes[0], panels):
        values = [row[name] for row in finished]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ticks = sorted({str(v) for v in values})
        xs = values if numeric else [ticks.index(str(v)) for v in values]
        axis.scatter(xs, [row["fid"] for row in finished], c="tab:blue", s=28)
        for x, row in zip(xs, finished):
            if row["winner"]:
                axis.scatter([x], [row["fid"]], marker="*", s=220, c="tab:orange", zorder=3, label="winner")
        if numeric and values and min(values) > 0 and max(values) >= 10 * min(values):
            axis.set_xscale("log")
        if not numeric:
            axis.set_xticks(range(len(ticks)), ticks)
        axis.set_xlabel(name)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("FID (lower is better)")
    failed = len(rows) - len(finished)
    fig.suptitle(f"{len(finished)} trial(s) finished" + (f", {failed} failed" if failed else ""))
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    plt.close(fig)


def side_by_side(pictures: list[Image.Image], gap: int = 12) -> Image.Image:
    """Pictures in a row, top-aligned on the grids' background, `gap` pixels apart."""
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    row = Image.new("L", (width, max(p.height for p in pictures)), 40)
    left = 0
    for picture in pictures:
        row.paste(picture, (left, 0))
        left += picture.width + gap
    return row
