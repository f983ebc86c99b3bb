"""What a person watches while training runs: Keras' live bar on a terminal, and elsewhere (a pod's log,
CI, a captured `mlflow run`) one plain line now and then, never the bar's backspaces.

    epoch 3/200  step 150/469  d_loss 0.6641  g_loss 0.8472  1,234 images/s  epoch ETA 0:03:12
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from typing import TextIO

PLAIN_EVERY_S = float(os.environ.get("MNIST_GAN_PROGRESS_EVERY_S", "30"))
SHOWN = ("d_loss", "g_loss")


class Progress:
    """One epoch's display. `update` takes the step within the epoch (1-based) and the metrics just
    flushed (`last` at the end of the epoch or the run); `first_step` is where a resumed epoch starts.
    The ETA uses the pace since the previous update; `budget_ends` (a time.perf_counter() value) is when
    the run's time budget is spent, if it has one."""

    def __init__(self, epoch: int, epochs: int, steps: int, metric_names: tuple[str, ...],
                 first_step: int = 0, stream: TextIO | None = None, budget_ends: float | None = None):
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.budget_ends = budget_ends
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.previous = (first_step, time.perf_counter())
        self.last_line = 0.0
        if self.live:
            import keras

            print(f"Epoch {epoch}/{epochs}", file=self.stream)
            self.bar = keras.utils.Progbar(steps, stateful_metrics=metric_names)

    def update(self, step: int, values: dict[str, float], last: bool = False) -> None:
        if self.live:
            self.bar.update(step, values=list(values.items()))
            return
        now = time.perf_counter()
        previous_step, previous_time = self.previous
        per_step = (now - previous_time) / max(step - previous_step, 1)
        self.previous = (step, now)
        if last or now - self.last_line >= PLAIN_EVERY_S:
            self.last_line = now
            print(self.line(step, values, per_step), file=self.stream, flush=True)

    def line(self, step: int, values: dict[str, float], per_step: float) -> str:
        eta = datetime.timedelta(seconds=round(per_step * (self.steps - step)))
        losses = "  ".join(f"{name} {values[name]:.4f}" for name in SHOWN if name in values)
        rate = f"{values['images_per_sec']:,.0f} images/s" if "images_per_sec" in values else ""
        budget = ""
        if self.budget_ends is not None:
            left = datetime.timedelta(seconds=round(max(self.budget_ends - time.perf_counter(), 0.0)))
            budget = f"  time budget left {left}"
        return (f"epoch {self.epoch}/{self.epochs}  step {step}/{self.steps}  {losses}  {rate}  "
                f"epoch ETA {eta}{budget}").replace("    ", "  ")
