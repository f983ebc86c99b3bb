"""When a challenger becomes champion: the rule, as a pure function of a head-to-head of the two, and the
acts of promotion and rollback, each under the model's promotion lock.

Every decision is recorded on the version as tags (`promotion.*`), promoted or not. Promotions of one
model take turns through a lock held in the registry itself (training/promotion_lock.py), so two racing
promotions end with the one champion the rule picks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training import config
from training.config import JobConfig
from training.promotion_lock import promotion_lock
from training.redaction import redacted

if TYPE_CHECKING:
    from training.head_to_head import HeadToHead
    from training.metrics import FidGain

    Judge = Callable[[Path, Path], HeadToHead]  # (challenger's file, champion's file) -> their head-to-head

ROLLED_BACK = "promotion.rolled_back"
# What a head-to-head measured (Decision.scores), and all it records on the version as promotion.* tags.
SCORES = ("fid", "champion_fid", "classes_covered", "champion_classes_covered", "fid_gain", "fid_gain_lower",
          "p_value", "confidence", "samples", "seconds")
HEAD_TO_HEAD_TAGS = tuple(f"promotion.{key}" for key in ("champion_version", "evaluator_sha256", *SCORES))


@dataclass(frozen=True)
class PromotionRule:
    """The whole promotion policy, one object for every path that can move `champion` (main, promote,
    sweep, pipeline): a challenger must cover at least `min_classes_covered` digit classes to be
    promoted at all; against a champion, scored head to head, its FID must be lower by more than
    `min_fid_gain` with `confidence` (beyond the evaluation's noise), and it may cover at most
    `max_classes_lost` classes fewer. The four are JobConfig's parameters, with its bounds (a rule out
    of them is refused); `PromotionRule.of(job)` is the rule of a job."""

    min_fid_gain: float
    max_classes_lost: int
    min_classes_covered: int
    confidence: float

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

    def decide(self, challenger: dict[str, float], champion: dict[str, float] | None,
               gain: FidGain | None = None) -> tuple[bool, str]:
        """Promote or not, and why. With `gain`, the two were scored head to head (the promotion's
        case) and the FID must be better beyond noise; without it, `challenger` and `champion` are
        recorded evaluations at one N compared as they are (a sweep ranking its own trials)."""
        admitted, why = self.admits(challenger)
        if not admitted:
            return False, why
        if champion is None:
            return True, f"no champion yet: the first evaluated model becomes champion; {why}"
        fid_gain = champion["fid"] - challenger["fid"]
        scores = f"FID {challenger['fid']:.3f} vs champion {champion['fid']:.3f}"
        if gain is None:
            if challenger["samples"] != champion["samples"]:
                return False, (f"not comparable: evaluated on {challenger['samples']:g} samples, the "
                               f"champion on {champion['samples']:g} (evaluate both with the same N)")
            fid_check = (fid_gain > self.min_fid_gain,
                         f"{scores} (gain {fid_gain:.3f}, needs > {self.min_fid_gain:g})")
        else:
            lower = gain.lower_bound(self.confidence)
            fid_check = (lower > self.min_fid_gain,
                         (f"{scores} head to head (gain {fid_gain:.3f}, at least {lower:.3f} with "
                          f"{self.confidence:.0%} confidence, needs > {self.min_fid_gain:g})"))
        classes_lost = champion["classes_covered"] - challenger["classes_covered"]
        checks = [fid_check,
                  (classes_lost <= self.max_classes_lost,
                   (f"classes covered {challenger['classes_covered']:g} vs champion "
                    f"{champion['classes_covered']:g} (may lose {self.max_classes_lost})"))]
        failed = [why for ok, why in checks if not ok]
        return (not failed), ("; ".join(failed) if failed else "; ".join(why for _, why in checks))


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    challenger: str
    champion: str | None
    head_to_head: HeadToHead | None = None
    rule: PromotionRule | None = None

    def scores(self) -> dict[str, float]:
        """What the head-to-head measured, by name: the `promotion.*` tags and the promote run's metrics."""
        head, rule = self.head_to_head, self.rule
        if head is None or rule is None:
            return {}
        return dict(zip(SCORES, (
            head.challenger["fid"], head.champion["fid"], head.challenger["classes_covered"],
            head.champion["classes_covered"], head.gain.estimate, head.gain.lower_bound(rule.confidence),
            head.gain.p_value(rule.min_fid_gain), rule.confidence, head.samples, head.seconds), strict=True))


@dataclass(frozen=True)
class Candidate:
    """A registered version to be judged: its registry (a client), name and version, and where its
    generator is: `generator_file`, the very file that was registered (a pipeline's artifact), checked
    in place; otherwise the version's files are downloaded and checked."""

    client: Any
    name: str
    version: str
    generator_file: Path | None = None

    def tags(self) -> dict[str, str]:
        return self.client.get_model_version(self.name, self.version).tags

    def verified_generator(self, directory: Path) -> Path:
        """The generator file, checked against the sha256 recorded at registration (ArtifactError)."""
        from training import registry

        if self.generator_file:
            registry.check_checksum(self.generator_file, self.tags().get(registry.CHECKSUM_KEY))
            return self.generator_file
        return registry.download_generator(self.client, self.name, self.version, directory)


def promote(name: str, rule: PromotionRule, judge: Judge, dry_run: bool = False, client=None,
            version: str | None = None, generator_file: Path | None = None,
            reinstate: bool = False) -> Decision:
    """Move `champion` to `version` (default: the `challenger`) if the rule says so, judged head to head
    against the champion; record why either way (nothing in a dry run). The decision and the alias
    move happen under the model's promotion lock. A version that was rolled back is refused unless
    `reinstate` (a person's explicit `promote --version`)."""
    from mlflow import MlflowClient

    from training import registry

    client = client or MlflowClient()
    challenger = version or registry.alias_version(client, name, registry.CHALLENGER)
    if challenger is None:
        raise registry.RegistryError(f"{name} has no '{registry.CHALLENGER}' version to promote")
    candidate = Candidate(client, name, challenger, generator_file)
    with contextlib.nullcontext() if dry_run else promotion_lock(client, name):
        decision = judge_against_champion(candidate, client, name, rule, judge, reinstate)
        if not dry_run and decision.champion != challenger:
            _record(client, name, decision, reinstated=reinstate and ROLLED_BACK in candidate.tags())
    return decision


def judge_against_champion(candidate: Candidate, client, name: str, rule: PromotionRule, judge: Judge,
                           reinstate: bool = False) -> Decision:
    """The decision for `candidate` against the champion of `name` in `client`'s registry (None: a
    registry not created yet, so no champion), changing nothing. The candidate may be registered
    elsewhere (a dry run of a promotion into another registry, where it would arrive as a new version:
    a rollback in its own registry does not follow it)."""
    from training import registry

    champion = client and registry.alias_version(client, name, registry.CHAMPION)
    if champion == candidate.version and candidate.client is client:
        return Decision(False, f"version {champion} is already the champion", champion, champion)
    tags = candidate.tags()
    if candidate.client is client and ROLLED_BACK in tags and not reinstate:
        return Decision(False, (f"version {candidate.version} was rolled back ({tags[ROLLED_BACK]}): a "
                                "plain promote never makes it champion again; `promote --version "
                                f"{candidate.version}` does, if the rule agrees"),
                        candidate.version, champion)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            challenger_file = candidate.verified_generator(Path(tmp) / "challenger")
            champion_file = champion and registry.download_generator(client, name, champion,
                                                                     Path(tmp) / "champion")
        except registry.ArtifactError as err:
            return Decision(False, f"artifacts not verified: {redacted(str(err))}", candidate.version,
                            champion)
        if champion is None:
            promote_it, reason = rule.decide(registry.version_metrics(candidate.client, candidate.name,
                                                                      candidate.version), None)
            return Decision(promote_it, reason, candidate.version, None, rule=rule)
        head = judge(challenger_file, champion_file)
    promote_it, reason = rule.decide(head.challenger, head.champion, head.gain)
    return Decision(promote_it, reason, candidate.version, champion, head, rule)


def _record(client, name: str, decision: Decision, reinstated: bool) -> None:
    version = decision.challenger
    tags = {"promotion.decision": "promoted" if decision.promote else "refused",
            "promotion.reason": decision.reason, "promotion.time": _now()}
    if decision.head_to_head:
        tags |= {"promotion.champion_version": decision.champion,
                 "promotion.evaluator_sha256": decision.head_to_head.evaluator_sha256,
                 **{f"promotion.{k}": f"{v:.6g}" for k, v in decision.scores().items()}}
    if decision.promote and decision.champion:
        tags["promotion.previous_champion"] = decision.champion
    if decision.promote and reinstated:
        tags["promotion.reinstated"] = f"{_now()}, by an explicit promote --version after its rollback"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if decision.head_to_head is None:  # scores of an earlier head-to-head would read as this decision's
        for key in set(client.get_model_version(name, version).tags) & set(HEAD_TO_HEAD_TAGS):
            client.delete_model_version_tag(name, version, key)
    if decision.promote:
        from training import registry

        client.set_registered_model_alias(name, registry.CHAMPION, version)


def rollback(name: str, client=None) -> tuple[str, str]:
    """Point `champion` back at the version it replaced; returns (from_version, to_version). The version
    rolled back is marked, and a plain promote never makes it champion again."""
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
        client.set_model_version_tag(name, champion, ROLLED_BACK,
                                     f"{_now()}, champion moved back to version {previous}")
        client.set_registered_model_alias(name, registry.CHAMPION, previous)
    return champion, previous


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
