"""`mnist-gan sample`: digits from any generator URI, written once, never over an existing file."""

from __future__ import annotations

import numpy as np

from tests.support.two_generators import USES_LAB

pytestmark = USES_LAB


def test_sample_writes_uint8_digits_and_a_grid_and_never_overwrites(lab):
    name = "sample-test"
    lab.champion_of_the_trained_generator(name)
    out = lab.directory / "samples.npz"
    lab.cli("sample", "--model-uri", f"models:/{name}@champion", "-n", "300", "--out", str(out))
    with np.load(out, allow_pickle=False) as npz:
        assert npz["images"].shape == (300, 28, 28) and npz["images"].dtype == np.uint8
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    again = lab.cli("sample", "--model-uri", f"models:/{name}@champion", "--out", str(out), expect=2)
    assert "choose a new file (nothing is overwritten)" in again.stderr
