"""When a challenger becomes champion: the rule, as a pure function of two evaluations, and the acts
of promotion and rollback, each under the model's promotion lock.

Every decision is recorded on the version as tags (`promotion.*`), promoted or not. Promotions of one
model take turns through a lock held in the registry itself, so two racing promotions end with the one
champion the rule picks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from training import config
from training.config import JobConfig

LOCK_STALE_S = 300  # a promotion lock older than this was left by a killed process and is broken
# What MLflow answers to the creation of a lock another promotion holds: "already exists", or, when
# that holder releases it at the same moment, "does not exist" (the store looks the existing model up
# to word its error, and finds it gone).
CONTENTION = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")


@dataclass(frozen=True)
class PromotionRule:
    """The whole promotion policy, one object for every path that can move `champion` (main, promote,
    sweep, pipeline): a challenger must cover at least `min_classes_covered` digit classes to be
    promoted at all; against a champion, its FID must be lower by more than `min_fid_gain`, and it may
    cover at most `max_classes_lost` classes fewer. The three are JobConfig's parameters, with its
    bounds (a rule out of them is refused); `PromotionRule.of(job)` is the rule of a job."""

    min_fid_gain: float
    max_classes_lost: int
    min_classes_covered: int

    def __post_init__(self) -> None:
        for name in self.parameters():
            config.check(config.param(JobConfig, name), getattr(self, name))

    @classmethod
    def parameters(cls) -> tuple[str, ...]:
        """The JobConfig parameters a rule is made of (the flags of every command that promotes)."""
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls, job: JobConfig) -> PromotionRule:
        return cls(**{name: getattr(job, name) for name in cls.parameters()})

    def admits(self, challenger: dict[str, float]) -> tuple[bool, str]:
        """Whether the challenger covers enough classes to be promoted at all, champion or not."""
        covered = challenger["classes_covered"]
        if covered < self.min_classes_covered:
            return False, (f"{covered:g} digit classes covered, needs {self.min_classes_covered} "
                           "to be promoted at all (min_classes_covered)")
        return True, f"{covered:g} digit classes covered (needs {self.min_classes_covered})"

    def decide(self, challenger: dict[str, float], champion: dict[str, float] | None) -> tuple[bool, str]:
        admitted, why = self.admits(challenger)
        if not admitted:
            return False, why
        if champion is None:
            return True, f"no champion yet: the first evaluated model becomes champion; {why}"
        if challenger["samples"] != champion["samples"]:
            return False, (f"not comparable: evaluated on {challenger['samples']:g} samples, the champion "
                           f"on {champion['samples']:g} (evaluate both with the same N)")
        fid_gain = champion["fid"] - challenger["fid"]
        classes_lost = champion["classes_covered"] - challenger["classes_covered"]
        checks = [
            (fid_gain > self.min_fid_gain,
             (f"FID {challenger['fid']:.3f} vs champion {champion['fid']:.3f} "
              f"(gain {fid_gain:.3f}, needs > {self.min_fid_gain:g})")),
            (classes_lost <= self.max_classes_lost,
             (f"classes covered {challenger['classes_covered']:g} vs champion "
              f"{champion['classes_covered']:g} (may lose {self.max_classes_lost})")),
        ]
        failed = [why for ok, why in checks if not ok]
        return (not failed), ("; ".join(failed) if failed else "; ".join(why for _, why in checks))


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    challenger: str
    champion: str | None


def promote(name: str, rule: PromotionRule, dry_run: bool = False, client=None, version: str | None = None,
            generator_file: Path | None = None) -> Decision:
    """Move `champion` to `version` (default: the `challenger`) if the rule says so; record why either
    way. The decision and the alias move happen under the model's promotion lock. The version's files
    are verified against their recorded sha256: `generator_file`, the very file that was registered
    (a pipeline's artifact), is checked in place; otherwise the version is downloaded."""
    from mlflow import MlflowClient

    from training import registry

    client = client or MlflowClient()
    challenger = version or registry.alias_version(client, name, registry.CHALLENGER)
    if challenger is None:
        raise registry.RegistryError(f"{name} has no '{registry.CHALLENGER}' version to promote")
    with contextlib.nullcontext() if dry_run else promotion_lock(client, name):
        champion = registry.alias_version(client, name, registry.CHAMPION)
        if champion == challenger:
            return Decision(False, f"version {challenger} is already the champion", challenger, champion)
        try:
            if generator_file:
                expected = client.get_model_version(name, challenger).tags.get(registry.CHECKSUM_KEY)
                registry.check_checksum(Path(generator_file), expected)
            else:
                registry.check_version_files(client, name, challenger)
        except registry.ArtifactError as err:
            promote_it, reason = False, f"artifacts not verified: {err}"
        else:
            promote_it, reason = rule.decide(
                registry.version_metrics(client, name, challenger),
                registry.version_metrics(client, name, champion) if champion else None)
        decision = Decision(promote_it, reason, challenger, champion)
        if dry_run:
            return decision
        client.set_model_version_tag(name, challenger, "promotion.decision",
                                     "promoted" if promote_it else "refused")
        client.set_model_version_tag(name, challenger, "promotion.reason", reason)
        client.set_model_version_tag(name, challenger, "promotion.time", _now())
        if promote_it:
            if champion:
                client.set_model_version_tag(name, challenger, "promotion.previous_champion", champion)
            client.set_registered_model_alias(name, registry.CHAMPION, challenger)
    return decision


def rollback(name: str, client=None) -> tuple[str, str]:
    """Point `champion` back at the version it replaced; returns (from_version, to_version)."""
    from mlflow import MlflowClient

    from training import registry

    client = client or MlflowClient()
    with promotion_lock(client, name):
        champion = registry.alias_version(client, name, registry.CHAMPION)
        if champion is None:
            raise registry.RegistryError(f"{name} has no '{registry.CHAMPION}' to roll back")
        previous = client.get_model_version(name, champion).tags.get("promotion.previous_champion")
        if not previous:
            raise registry.RegistryError(
                f"{name} version {champion} replaced no earlier champion: nothing to roll back to")
        client.set_registered_model_alias(name, registry.CHAMPION, previous)
        client.set_model_version_tag(name, champion, "promotion.rolled_back", _now())
    return champion, previous


def lock_name(name: str) -> str:
    return f"{name}.promotion-lock"


@contextlib.contextmanager
def promotion_lock(client, name: str, timeout_s: float = 600):
    """Hold the promotion lock of model `name`, so that promotions from any process or machine that
    share the registry take turns.

    The lock is a registered model named `<name>.promotion-lock` that exists only while a promotion
    runs; the registry's unique names make its creation atomic. Contract: this process holds the lock
    exactly when the lock model exists with this process's `holder` tag. Creating it either succeeds or
    fails with one of CONTENTION (then this process waits its turn, breaking a lock older than
    LOCK_STALE_S that a killed process left); any other error is raised.
    """
    from mlflow.exceptions import MlflowException

    from training.registry import RegistryError

    lock, holder = lock_name(name), uuid.uuid4().hex
    description = (f"Not a model: held while a version of {name} is being promoted or rolled back, "
                   "and deleted right after.")
    deadline, waiting = time.monotonic() + timeout_s, False
    while True:
        try:
            client.create_registered_model(lock, tags={"holder": holder, "since": str(time.time())},
                                           description=description)
            break
        except MlflowException as err:
            if err.error_code not in CONTENTION:
                raise
        tags = _lock_tags(client, lock)
        if tags is not None and tags.get("holder") == holder:
            break  # our own creation, answered as "already exists" after a retried request
        if tags is not None and time.time() - float(tags.get("since", "0")) > LOCK_STALE_S:
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)  # left by a killed promotion
            continue
        if time.monotonic() > deadline:
            raise RegistryError(f"{lock} is held by another promotion for over {timeout_s:.0f} s")
        if not waiting:
            print(f"promote: waiting for {lock}: another promotion or rollback of {name} holds it",
                  file=sys.stderr, flush=True)
            waiting = True
        time.sleep(random.uniform(0.2, 0.5))  # jitter, so that waiting racers spread out
    try:
        yield
    finally:
        client.delete_registered_model(lock)


def _lock_tags(client, lock: str) -> dict[str, str] | None:
    """The lock's tags, or None when no one holds it (released between our attempt and this look)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(lock).tags
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
