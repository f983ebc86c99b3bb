"""What the jobs share about files: a copy to a pipeline's output path, and the evaluator's classifier
from a pipeline artifact or the local cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.classifier import MnistClassifier
    from training.data import Mnist


def copy_file(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def evaluator(mnist: Mnist, classifier_dir: str | None) -> MnistClassifier:
    """The evaluator's classifier: from `classifier_dir` (a pipeline artifact), else the local cache's
    (trained there if absent)."""
    from training import classifier as mnist_classifier

    return (mnist_classifier.load(Path(classifier_dir)) if classifier_dir
            else mnist_classifier.load_or_train(mnist))
