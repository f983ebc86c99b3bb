"""The jobs that write a local file and track nothing: generated digits, and a checked copy of MNIST."""

from __future__ import annotations

import shutil
from pathlib import Path

from training.data import Mnist, load_mnist


def sample(model_uri: str, n: int, seed: int, out: Path) -> Path:
    """Write n digits as uint8 (n, 28, 28) under key `images` in `out` (.npz), and a PNG grid beside it."""
    import numpy as np

    from training import plots
    from training.sampling import generate, load_generator

    digits = plots.to_uint8(generate(load_generator(model_uri), n, seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.npz")
    np.savez_compressed(partial, images=digits)
    partial.replace(out)
    plots.grid(digits[:64], caption=f"{model_uri}, seed {seed}").save(out.with_suffix(".png"))
    return out


def download_data(source: str, target: Path) -> Mnist:
    """Fetch MNIST from `source` (the public URL by default), check it (sha256, shapes, labels) and write
    the verified file to `target`, a local copy for offline runs (`--data target`)."""
    mnist = load_mnist(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    shutil.copyfile(mnist.path, partial)
    partial.replace(target)
    return mnist
