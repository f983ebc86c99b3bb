"""Sample quality per minute of training: the project's CPU recipe against the TF DCGAN tutorial.

Each recipe trains from scratch on the same machine, one after the other; at each wall-clock mark
(training time only, compilation included, evaluation excluded) its generator is scored on `samples`
images by the project's evaluator, beside the real-data reference.

    KERAS_BACKEND=tensorflow python -m benchmarks.quality_per_minute --data ../shared/data/mnist.npz
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from training import backend, data, evaluation, loop
from training import classifier as mnist_classifier
from training.config import JobConfig, TrainConfig
from training.data import load_mnist
from training.sampling import generate


class ProjectRecipe:
    """The training library's step (what `mnist-gan train` runs), driven one step at a time."""

    def __init__(self, images: np.ndarray, config: TrainConfig):
        import keras

        self.config, self.num_images = config, len(images)
        self.gan = loop.build_gan(config)
        self.step_fn = backend.compile_step(self.gan.train_step)
        self.state = self.gan.initial_state()
        self.device_images = keras.ops.convert_to_tensor(images)
        self.steps_done, self.images_seen = 0, 0
        self.batches = None

    def step(self) -> None:
        steps_per_epoch = data.steps_per_epoch(self.num_images, self.config.batch_size,
                                                     self.config.n_iter_d)
        epoch, i = divmod(self.steps_done, steps_per_epoch)
        if i == 0:
            self.batches = data.epoch_batches(self.num_images, self.config.batch_size,
                                                    self.config.n_iter_d, self.config.seed, epoch)
        self.state, metrics = self.step_fn(self.state, self.device_images, self.batches[i])
        backend.to_numpy(metrics["g_loss"])
        self.steps_done += 1
        self.images_seen += self.config.batch_size * self.config.n_iter_d

    def samples(self, n: int, seed: int = 0) -> np.ndarray:
        self.gan.assign(self.state)
        return generate(self.gan.generator, n, seed)


def train_to_marks(recipe, marks_min: list[float], score) -> list[dict]:
    """Train until each mark of training time, then score; returns one row per mark."""
    rows, trained_s, steps = [], 0.0, 0
    for mark in marks_min:
        while trained_s < mark * 60:
            started = time.perf_counter()
            recipe.step()
            trained_s += time.perf_counter() - started
            steps += 1
        started = time.perf_counter()
        metrics = score(recipe.samples)
        rows.append({"minutes": mark, "trained_s": round(trained_s, 1), "steps": steps,
                     "epochs": round(recipe.images_seen / recipe.num_images, 2),
                     "evaluation_s": round(time.perf_counter() - started, 1),
                     **{k: round(v, 4) for k, v in metrics.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--marks", default="2.5,5,10", help="minutes of training, comma-separated")
    parser.add_argument("--samples", type=int, default=JobConfig().samples)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--recipes", default="project,tutorial")
    args = parser.parse_args()
    marks = [float(m) for m in args.marks.split(",")]

    mnist = load_mnist(args.data)
    classifier = mnist_classifier.load_or_train(mnist)
    real_features, reference, _ = evaluation.real_reference(classifier, mnist, args.samples, seed=0)
    print(json.dumps({"reference": reference}), flush=True)

    def score(sampler) -> dict:
        return evaluation.score(classifier, sampler(args.samples), real_features)[0]

    images = data.to_unit_range(mnist.x_train)
    config = TrainConfig(preset=args.preset, precision=args.precision)
    results = {"reference": {k: round(v, 4) for k, v in reference.items()}, "samples": args.samples,
               "project_recipe": {"preset": config.preset, "batch_size": config.batch_size,
                                  "precision": config.precision, "backend": backend.name()}}
    for name in args.recipes.split(","):
        if name == "project":
            recipe = ProjectRecipe(images, config)
        else:
            from benchmarks.dcgan_tutorial import TutorialDcgan

            recipe = TutorialDcgan(images)
        results[name] = train_to_marks(recipe, marks, score)
    print(json.dumps({"quality_per_minute": results}), flush=True)


if __name__ == "__main__":
    main()
