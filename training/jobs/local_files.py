"""The jobs that write a local file and track nothing: generated digits, and a checked copy of MNIST."""

from __future__ import annotations

import shutil
from pathlib import Path

from training.data import Mnist, load_mnist
from training.new_files import write_new


def sample_files(out: Path) -> tuple[Path, Path]:
    """What `sample` writes: the .npz `out` and the PNG grid beside it."""
    return out, out.with_suffix(".png")


def sample(model_uri: str, n: int, seed: int, out: Path) -> Path:
    """Write n digits as uint8 (n, 28, 28) under key `images` in `out` (.npz), and a PNG grid beside it;
    neither over an existing file."""
    import numpy as np

    from training import plots
    from training.sampling import generate, load_generator

    digits = plots.to_uint8(generate(load_generator(model_uri), n, seed))
    npz, png = sample_files(out)
    write_new(npz, lambda path: np.savez_compressed(path, images=digits))
    write_new(png, plots.grid(digits[:64], caption=f"{model_uri}, seed {seed}").save)
    return out


def download_data(source: str, target: Path) -> Mnist:
    """Fetch MNIST from `source` (the public URL by default), check it (sha256, shapes, labels) and write
    the verified file to `target` (never over an existing file), a local copy for offline runs
    (`--data target`)."""
    mnist = load_mnist(source)
    write_new(target, lambda path: shutil.copyfile(mnist.path, path))
    return mnist
