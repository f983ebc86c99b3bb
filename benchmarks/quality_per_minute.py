"""Sample quality per minute of training: the project's CPU recipe against the TF DCGAN tutorial.

Each recipe trains from scratch on the same machine, one after the other; at each wall-clock mark
(training time only, compilation included, evaluation excluded) its generator is scored on `samples`
images by the project's evaluator, beside the real-data reference. The project's run scores its raw G,
the moving average its step keeps (`ema_decay`), and averages of other decays kept beside it on the host
(outside the timed steps); it also times one point of the FID curve (the averaged and the raw G on
`eval_samples`), its share of training at the default `eval_every`.

    KERAS_BACKEND=tensorflow python -m benchmarks.quality_per_minute --data ~/data/mnist.npz
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.run_all import cpu_isa
from training import backend, data, ema, evaluation, loop
from training import classifier as mnist_classifier
from training.config import JobConfig, TrainConfig
from training.data import load_mnist
from training.sampling import latents, render


class ProjectRecipe:
    """The training library's step (what `mnist-gan train` runs), driven one step at a time."""

    def __init__(self, images: np.ndarray, config: TrainConfig, other_decays: tuple[float, ...] = ()):
        import keras

        self.config, self.num_images = config, len(images)
        self.gan = loop.build_gan(config)
        self.step_fn = backend.compile_step(self.gan.train_step)
        self.state = self.gan.initial_state()
        self.other_averages = {decay: ema.init(*self.gan.generator_weights(self.state, averaged=False))
                               for decay in other_decays}
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

    def after_step(self) -> None:
        """Move the host-side averages (not part of the timed step)."""
        raw = self.gan.generator_weights(self.state, averaged=False)
        self.other_averages = {decay: ema.update(average, *raw, decay)
                               for decay, average in self.other_averages.items()}

    def generators(self) -> dict[str, tuple[list, list]]:
        """Name -> G's weights: raw, the step's average, and each host-side average."""
        raw = self.gan.generator_weights(self.state, averaged=False)
        named = {"raw": raw, f"ema_{self.config.ema_decay:g}": self.gan.generator_weights(self.state)}
        return named | {f"ema_{decay:g}": ema.weights(average, raw)
                        for decay, average in self.other_averages.items()}

    def samples(self, n: int, seed: int = 0, weights: tuple[list, list] | None = None) -> np.ndarray:
        self.gan.assign(self.state)
        return render(self.gan.generator, latents(n, self.config.z_dim, seed), weights)


def train_to_marks(recipe, marks_min: list[float], score, probe=None) -> dict[str, list[dict]]:
    """Train until each mark of training time, then score each of the recipe's generators; returns
    name -> one row per mark (name "tutorial" for the tutorial, "raw", "ema_<decay>" for the project).
    With `probe` (the FID curve's judge), each project row also times one curve point."""
    rows, trained_s, steps = {}, 0.0, 0
    for mark in marks_min:
        while trained_s < mark * 60:
            started = time.perf_counter()
            recipe.step()
            trained_s += time.perf_counter() - started
            steps += 1
            if hasattr(recipe, "after_step"):
                recipe.after_step()
        epochs = recipe.images_seen / recipe.num_images
        common = {"minutes": mark, "trained_s": round(trained_s, 1), "steps": steps,
                  "epochs": round(epochs, 2)}
        if probe is not None:
            started = time.perf_counter()
            for weights in (recipe.gan.generator_weights(recipe.state),
                            recipe.gan.generator_weights(recipe.state, averaged=False)):
                probe(recipe.gan.generator, weights)
            point_s = time.perf_counter() - started
            every = recipe.config.eval_every
            common |= {"curve_point_s": round(point_s, 2),
                       "curve_share": round(point_s / (every * trained_s / epochs + point_s), 4)}
        generators = recipe.generators() if hasattr(recipe, "generators") else {"tutorial": None}
        for name, weights in generators.items():
            started = time.perf_counter()
            sampler = recipe.samples if weights is None else (
                lambda n, seed=0, w=weights: recipe.samples(n, seed, w))
            metrics = score(sampler)
            rows.setdefault(name, []).append({**common,
                                              "evaluation_s": round(time.perf_counter() - started, 1),
                                              **{k: round(v, 4) for k, v in metrics.items()}})
            print(json.dumps({name: rows[name][-1]}), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--marks", default="2.5,5,10", help="minutes of training, comma-separated")
    parser.add_argument("--samples", type=int, default=JobConfig().samples)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--precision", default=None,
                        help="default: mixed_bfloat16 on a CPU with AVX-512 BF16 (1.4x faster there), "
                             "else float32")
    parser.add_argument("--recipes", default="project,tutorial")
    parser.add_argument("--other-decays", default="0.99,0.995",
                        help="moving averages of G kept beside the step's, compared at each mark")
    args = parser.parse_args()
    marks = [float(m) for m in args.marks.split(",")]

    mnist = load_mnist(args.data)
    classifier = mnist_classifier.load_or_train(mnist)
    real_features, reference, _ = evaluation.real_reference(classifier, mnist, args.samples, seed=0)
    print(json.dumps({"reference": reference}), flush=True)

    def score(sampler) -> dict:
        return evaluation.score(classifier, sampler(args.samples), real_features)[0]

    images = data.to_unit_range(mnist.x_train)
    precision = args.precision or ("mixed_bfloat16" if cpu_isa() == "avx512_bf16" else "float32")
    config = TrainConfig(preset=args.preset, precision=precision)
    results = {"reference": {k: round(v, 4) for k, v in reference.items()}, "samples": args.samples,
               "project_recipe": {"preset": config.preset, "batch_size": config.batch_size,
                                  "learning_rate": config.learning_rate, "n_iter_d": config.n_iter_d,
                                  "n_iter_g": config.n_iter_g, "precision": config.precision,
                                  "backend": backend.name(),
                                  "ema_decay": config.ema_decay, "eval_every": config.eval_every,
                                  "eval_samples": config.eval_samples}}
    for name in args.recipes.split(","):
        if name == "project":
            other_decays = tuple(float(d) for d in args.other_decays.split(",") if d)
            probe = evaluation.QualityProbe(classifier, mnist, config.eval_samples)
            results["project"] = train_to_marks(ProjectRecipe(images, config, other_decays), marks,
                                                score, probe)
        else:
            from benchmarks.dcgan_tutorial import TutorialDcgan

            results["tutorial"] = train_to_marks(TutorialDcgan(images), marks, score)["tutorial"]
    print(json.dumps({"quality_per_minute": results}), flush=True)


if __name__ == "__main__":
    main()
