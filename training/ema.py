"""An exponential moving average of the generator's weights (Polyak averaging of G, as in Karras et al.
2018 and Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training").

After every training step, for each of G's variables (BatchNormalization's moving statistics included):

    d_t     = min(decay, (1 + t) / (WARMUP + t))      t = steps averaged so far
    ema_t+1 = d_t * ema_t + (1 - d_t) * theta_t+1

The warm-up lets the average forget G's random start quickly in a short run; after about
WARMUP / (1 - decay) steps it averages over the last ~1 / (1 - decay) steps. Pure functions of tensors,
so they run inside the compiled step on every backend.
"""

from __future__ import annotations

from keras import ops

WARMUP = 10.0


def decay_at(decay: float, t):
    """The decay applied at update t (t = 0 for the first update)."""
    return ops.minimum(decay, (1.0 + t) / (WARMUP + t))


def init(trainable: list, non_trainable: list) -> dict[str, list]:
    """The average of a generator with these weights: a float32 copy of each (its own buffer: a compiled
    step that donates the state must not find one buffer twice in it), and t = 0."""
    return {"t": [ops.zeros((), "float32")],
            "trainable": [ops.copy(ops.cast(w, "float32")) for w in trainable],
            "non_trainable": [ops.copy(ops.cast(w, "float32")) for w in non_trainable]}


def update(ema: dict[str, list], trainable: list, non_trainable: list, decay: float) -> dict[str, list]:
    """One step of the average towards the generator's current weights."""
    t = ema["t"][0]
    d = decay_at(decay, t)

    def towards(averages, weights):
        return [d * a + (1.0 - d) * ops.cast(w, "float32")
                for a, w in zip(averages, weights, strict=True)]

    return {"t": [t + 1.0], "trainable": towards(ema["trainable"], trainable),
            "non_trainable": towards(ema["non_trainable"], non_trainable)}


def weights(ema: dict[str, list], like: tuple[list, list]) -> tuple[list, list]:
    """The averaged (trainable, non-trainable) weights in the dtypes of `like` (a generator's)."""
    return tuple([ops.cast(a, w.dtype) for a, w in zip(averages, originals, strict=True)]
                 for averages, originals in zip((ema["trainable"], ema["non_trainable"]), like, strict=True))
