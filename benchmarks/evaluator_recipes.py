"""What the evaluator's training costs, and whether fewer epochs keep its judgement.

For each number of epochs the MNIST classifier that judges samples is trained afresh (seeded, as
`classifier.load_or_train` trains it, not cached); its training time and test accuracy are recorded, and
it scores the same samples of each given generator. Its judgement is kept when the generators rank the
same by FID as under the classifier the project uses now.

    python -m benchmarks.evaluator_epochs --data ~/data/mnist.npz --generators a.keras,b.keras,c.keras
"""

from __future__ import annotations

import argparse
import json
import time

from training import classifier as mnist_classifier
from training import evaluation
from training.data import load_mnist
from training.sampling import generate, load_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--generators", required=True, help="comma-separated .keras files")
    parser.add_argument("--epochs", default="1,2,3")
    parser.add_argument("--samples", type=int, default=10_000)
    args = parser.parse_args()
    mnist = load_mnist(args.data)
    paths = args.generators.split(",")
    samples = {path: generate(load_generator(path), args.samples, seed=0) for path in paths}
    rows = []
    for epochs in [int(e) for e in args.epochs.split(",")]:
        started = time.perf_counter()
        model, accuracy = mnist_classifier._train(mnist, epochs)
        seconds = time.perf_counter() - started
        judge = mnist_classifier.MnistClassifier(model, f"epochs-{epochs}", accuracy)
        real_features, reference, _ = evaluation.real_reference(judge, mnist, args.samples, seed=0)
        fids = {path: round(evaluation.score(judge, images, real_features)[0]["fid"], 2)
                for path, images in samples.items()}
        row = {"epochs": epochs, "train_s": round(seconds, 1), "test_accuracy": round(accuracy, 4),
               "reference_fid": round(reference["fid"], 3), "fid": fids,
               "ranking": sorted(fids, key=fids.get)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"evaluator_epochs": rows}), flush=True)


if __name__ == "__main__":
    main()
