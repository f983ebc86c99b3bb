"""Wall time of one sample evaluation (10,000 samples by default) on this machine, by stage.

    python benchmarks/evaluation_time.py --data ~/data/mnist.npz [--preset seed] [--samples 10000]

The generator is a freshly built one of the preset (its weights do not change the work done); the
evaluator is the cached one (trained first if absent, outside the timing).
"""

from __future__ import annotations

import argparse
import json
import time

from training import classifier as mnist_classifier
from training import evaluation
from training.config import PRESETS
from training.data import load_mnist, to_unit_range
from training.models import build_models
from training.sampling import generate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--preset", default="seed", choices=PRESETS)
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    mnist = load_mnist(args.data)
    classifier = mnist_classifier.load_or_train(mnist)
    generator, _ = build_models(args.preset, 100)
    generate(generator, 10)  # build and warm up outside the timing

    started = time.perf_counter()
    fake = generate(generator, args.samples)
    generated = time.perf_counter()
    real_features, _ = classifier.features_and_probabilities(to_unit_range(mnist.x_test))
    evaluation.score(classifier, fake, real_features)
    scored = time.perf_counter()
    evaluation.evaluate(generator, mnist, classifier, n=args.samples)
    whole = time.perf_counter() - scored
    print(json.dumps({"preset": args.preset, "samples": args.samples,
                      "generate_s": round(generated - started, 2),
                      "score_s": round(scored - generated, 2),
                      "evaluate_with_reference_s": round(whole, 2)}))


if __name__ == "__main__":
    main()
