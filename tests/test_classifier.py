"""The evaluator classifier's cache: keyed by the code that trains it, trained once however many processes
ask at the same time, readable when it cannot be written, never a half-written entry; and the docker
runner hands it to the pipeline's containers, read-only.

Training is replaced by a fast fake (an untrained network, seeded) where a test only needs the cache's
behaviour: the real training takes a minute.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from tests.conftest import ROOT, cli_env
from training import classifier
from training.data import load_mnist

WAITING = "evaluator: waiting for another process"
TRAINING = "evaluator: training the MNIST classifier"
ASK = "import sys; from tests.test_classifier import ask; ask(*sys.argv[1:])"


def untrained(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return classifier.build_classifier()


def fingerprint(model: keras.Model) -> str:
    return classifier.MnistClassifier(model, "any", 1.0).fingerprint


def ask(data: str, trainings: str, release: str, *caches: str) -> None:
    """Run in a subprocess: the classifier from each cache folder in turn, printing its fingerprint. Its
    training is a fake that adds a line to the file `trainings`, then waits until the file `release`
    exists (given one), and returns an untrained network seeded by the process id: two processes' own
    trainings differ."""
    def fake_train(mnist, epochs):
        with open(trainings, "a") as f:
            f.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + 120
        while release and not Path(release).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{release} did not appear")
            time.sleep(0.05)
        return untrained(os.getpid()), 0.995

    classifier.train = fake_train
    mnist = load_mnist(data)
    for cache in caches:
        print(f"fingerprint {cache} {classifier.load_or_train(mnist, cache_dir=Path(cache)).fingerprint}",
              flush=True)


def start_ask(tmp_path: Path, out: Path, *args: Path | str, as_owner: bool = False) -> subprocess.Popen:
    """`ask(*args)` in a process of its own, on Keras' numpy backend (it imports in half the time of
    TensorFlow's, and the fake trains nothing). `as_owner`: where the tests run as root, without the
    capabilities that let root ignore permission bits."""
    drop = (["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
            if as_owner and os.geteuid() == 0 else [])
    with open(out, "w") as log:
        return subprocess.Popen(
            [*drop, sys.executable, "-c", ASK, *map(str, args)], cwd=ROOT,
            env=cli_env(tmp_path, backend="numpy"), stdout=log, stderr=subprocess.STDOUT)


def fingerprints(output: str) -> dict[str, str]:
    return dict(re.findall(r"^fingerprint (\S+) ([0-9a-f]{64})$", output, re.MULTILINE))


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mode, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def copy_module(tmp_path: Path, source: str, name: str):
    """training/classifier.py's `source`, imported as a module of its own from a file."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_the_key_follows_the_training_code_and_nothing_else(tmp_path):
    sha = "ab" * 32
    key = classifier.cache_key(sha)
    assert re.fullmatch(r"cnn-[0-9a-f]{12}-abababababababab", key)
    assert classifier.cache_key(sha, code=classifier.TRAINING_CODE) == key
    assert classifier.cache_key(sha, epochs=classifier.EPOCHS + 1) != key
    assert classifier.cache_key("cd" * 32).split("-")[1] == key.split("-")[1]  # same code, other data

    # the module itself, edited: docstrings elsewhere change nothing, the training recipe or the
    # architecture a new key
    source = Path(classifier.__file__).read_text()
    edits = {"docstrings": [("judges generated digits", "scores generated digits"),
                            ("another process trains the same one", "some process trains this one")],
             "batch size": [("batch_size = 128", "batch_size = 64")],
             "architecture": [("Conv2D(64, 3", "Conv2D(48, 3")]}
    keys = {}
    for what, replacements in edits.items():
        edited = source
        for old, new in replacements:
            assert old in edited, old
            edited = edited.replace(old, new)
        keys[what] = copy_module(tmp_path, edited, f"classifier_{what.replace(' ', '_')}").cache_key(sha)
    assert keys["docstrings"] == key
    assert keys["batch size"] != key and keys["architecture"] != key != keys["batch size"]


def test_weights_without_meta_json_are_never_loaded(tmp_path, mnist_path, monkeypatch):
    """What a process killed while saving leaves: it is trained again, and then complete."""
    mnist = load_mnist(str(mnist_path))
    entry = tmp_path / classifier.cache_key(mnist.sha256)
    entry.mkdir()
    half_written = untrained(1)
    half_written.save(entry / "classifier.keras")
    trained = untrained(2)
    monkeypatch.setattr(classifier, "train", lambda mnist, epochs: (trained, 0.995))

    loaded = classifier.load_or_train(mnist, cache_dir=tmp_path)
    assert loaded.fingerprint == fingerprint(trained) != fingerprint(half_written)
    assert json.loads((entry / "meta.json").read_text())["fingerprint"] == loaded.fingerprint
    assert classifier.load_or_train(mnist, cache_dir=tmp_path).fingerprint == loaded.fingerprint


def test_an_entry_that_is_not_what_its_meta_json_says_is_refused(tmp_path, mnist_path):
    mnist = load_mnist(str(mnist_path))
    key = classifier.cache_key(mnist.sha256)
    classifier.save(classifier.MnistClassifier(untrained(1), key, 0.995), tmp_path / key)
    untrained(2).save(tmp_path / key / "classifier.keras")  # other weights under the same meta.json
    with pytest.raises(classifier.ClassifierError, match="delete the folder to train it again"):
        classifier.load_or_train(mnist, cache_dir=tmp_path)
    classifier.save(classifier.MnistClassifier(untrained(1), key, 0.9), tmp_path / key)
    with pytest.raises(classifier.ClassifierError, match="0.9000 test accuracy, below 0.99"):
        classifier.load_or_train(mnist, cache_dir=tmp_path)


def test_two_processes_asking_at_once_train_it_once_and_load_the_same_weights(tmp_path, mnist_path):
    """The first to take the lock trains; its training ends only once the other says it waits."""
    cache, trainings, release = tmp_path / "evaluator", tmp_path / "trainings", tmp_path / "release"
    outs = [tmp_path / f"ask-{i}.log" for i in range(2)]
    asks = [start_ask(tmp_path, out, mnist_path, trainings, release, cache) for out in outs]
    try:
        deadline = time.monotonic() + 120
        while not any(WAITING in out.read_text() for out in outs):
            assert time.monotonic() < deadline, "neither process waited for the other"
            assert all(p.poll() is None for p in asks), "\n".join(out.read_text() for out in outs)
            time.sleep(0.1)
        release.touch()
        codes = [p.wait(timeout=120) for p in asks]
    finally:
        for p in asks:
            p.kill()
    logs = [out.read_text() for out in outs]
    assert codes == [0, 0], "\n".join(logs)
    assert len(trainings.read_text().splitlines()) == 1
    assert sorted(TRAINING in log for log in logs) == [False, True]
    assert sorted(WAITING in log for log in logs) == [False, True]
    (first,), (second,) = (fingerprints(log).values() for log in logs)
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    assert first == second == json.loads((entry / "meta.json").read_text())["fingerprint"]
    assert {p.name for p in cache.iterdir()} == {entry.name, f"{entry.name}.lock"}


def test_a_read_only_cache_still_yields_a_classifier_and_writes_nothing(tmp_path, mnist_path):
    """Cold, the classifier is trained in memory, with one line that says so; warm, it is loaded without
    taking the lock."""
    mnist = load_mnist(str(mnist_path))
    key = classifier.cache_key(mnist.sha256)
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    cold.mkdir()
    saved = classifier.MnistClassifier(untrained(3), key, 0.995)
    classifier.save(saved, warm / key)
    for path in (cold, warm, *warm.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)
    before = {folder: tree(folder) for folder in (cold, warm)}
    try:
        out = tmp_path / "ask.log"
        asked = start_ask(tmp_path, out, mnist_path, tmp_path / "trainings", "", cold, warm, as_owner=True)
        assert asked.wait(timeout=120) == 0, out.read_text()
        after = {folder: tree(folder) for folder in (cold, warm)}
    finally:
        for path in (cold, warm, *warm.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
    log = out.read_text()
    assert log.count("cannot be written") == 1 and f"the cache {cold} cannot be written" in log, log
    assert log.count(TRAINING) == 1 and len((tmp_path / "trainings").read_text().splitlines()) == 1
    assert fingerprints(log)[str(warm)] == saved.fingerprint
    assert after == before


def test_the_docker_runner_mounts_the_classifiers_read_only(tmp_path, monkeypatch):
    from pipelines import runner

    cache = tmp_path / "evaluators"
    cache.mkdir()
    monkeypatch.setattr("training.data.EVALUATOR_CACHE", cache)
    args = runner.docker_runner(tmp_path / "root", tmp_path / "workspace", {}, "host").container_run_args
    (mount,) = [m for m in args["mounts"] if m["Target"] == runner.EVALUATOR_MOUNT]
    assert mount["Source"] == str(cache) and mount["ReadOnly"] and mount["Type"] == "bind"
    assert args["environment"]["MNIST_GAN_EVALUATOR_CACHE"] == runner.EVALUATOR_MOUNT
