"""What the evaluator's training costs, and whether another recipe keeps its judgement.

Each recipe's MNIST classifier (the one that judges samples) is trained afresh, seeded, as
`classifier.load_or_train` trains the project's, but not cached; its training time and test accuracy are
recorded, and it scores the same samples of each given generator. A recipe keeps the judgement when the
generators rank the same by FID as under the other recipes.

    python -m benchmarks.evaluator_recipes --data ~/data/mnist.npz --generators a.keras,b.keras,c.keras
"""

from __future__ import annotations

import argparse
import json
import time

import keras
from keras import layers

from training import classifier as mnist_classifier
from training import evaluation
from training.data import load_mnist
from training.sampling import generate, load_generator


def classifier_until_2026_12_04() -> keras.Model:
    """The judge the project used until 2026-12-04: two 3x3 convolutions before the first pooling."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.25),
        layers.Dense(128, activation="relu", name=mnist_classifier.FEATURE_LAYER),
        layers.Dropout(0.25),
        layers.Dense(10, activation="softmax", dtype="float32"),
    ], name="mnist_evaluator_until_2026_12_04")


# name -> keyword arguments of classifier.train
RECIPES = {
    "previous": {"epochs": 3, "build": classifier_until_2026_12_04, "peak_learning_rate": 1e-3,
                 "decay": False},
    "previous-2-epochs-cosine": {"epochs": 2, "build": classifier_until_2026_12_04,
                                 "peak_learning_rate": 3e-3},
    "project": {},
    "project-1-epoch": {"epochs": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--generators", required=True, help="comma-separated .keras files")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated names of RECIPES")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    mnist = load_mnist(args.data)
    paths = args.generators.split(",")
    samples = {path: generate(load_generator(path), args.samples, seed=0) for path in paths}
    rows = []
    for name in args.recipes.split(","):
        started = time.perf_counter()
        model, accuracy = mnist_classifier.train(mnist, **RECIPES[name])
        seconds = time.perf_counter() - started
        judge = mnist_classifier.MnistClassifier(model, name, accuracy)
        real_features, reference, _ = evaluation.real_reference(judge, mnist, args.samples, seed=0)
        fids = {path: round(evaluation.score(judge, images, real_features)[0]["fid"], 2)
                for path, images in samples.items()}
        row = {"recipe": name, "train_s": round(seconds, 1), "test_accuracy": round(accuracy, 4),
               "reference_fid": round(reference["fid"], 3), "fid": fids,
               "ranking": [paths.index(path) + 1 for path in sorted(fids, key=fids.get)]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"evaluator_recipes": rows}), flush=True)


if __name__ == "__main__":
    main()
