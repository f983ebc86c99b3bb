"""Model FLOPs of one training step, counted from the layers (XLA's cost analysis omits cuDNN convs).

Forward FLOPs per image are 2 x multiply-adds of every Dense and Conv2D. A step's FLOPs follow the
recipe: each D update runs G forward on B images and D forward + backward (3x) on 2B; each G update
runs G forward + backward (3x) and D forward + input gradient (2x) on B images.
"""

from __future__ import annotations

import math


def forward_flops_per_image(model) -> int:
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
        elif kind == "Conv2D":
            height, width, filters = layer.output.shape[1:]
            kh, kw, channels_in, _ = layer.kernel.shape
            total += 2 * height * width * filters * kh * kw * channels_in
    return total


def step_flops(generator, discriminator, batch: int, n_iter_d: int = 1, n_iter_g: int = 5) -> int:
    g, d = forward_flops_per_image(generator), forward_flops_per_image(discriminator)
    d_update = batch * g + 3 * (2 * batch) * d
    g_update = 3 * batch * g + 2 * batch * d
    return n_iter_d * d_update + n_iter_g * g_update


if __name__ == "__main__":
    from training.config import PRESETS
    from training.models import build_models

    for preset in PRESETS:
        g, d = build_models(preset, 100)
        print(f"{preset}: G {forward_flops_per_image(g) / 1e6:.1f} MFLOP/image, "
              f"D {forward_flops_per_image(d) / 1e6:.1f} MFLOP/image, step at batch 128: "
              f"{step_flops(g, d, 128) / 1e9:.1f} GFLOP ({math.ceil(60000 / 128)} steps/epoch)")
