"""A sweep: the trials a SPEC names, each a set of TrainConfig values, every one checked before anything
runs; and how the trials that finished are ranked, by the registry's own promotion rule.

SPEC is YAML or JSON, in a file or given as text:

    learning_rate: [1e-4, 2e-4]     a mapping is a grid: every combination of the lists is a trial
    seed: [0, 1, 2]                 (a single value instead of a list is set in every trial)

    - {seed: 0, n_iter_g: 5}        a list of mappings is the trials themselves
    - {seed: 1, n_iter_g: 3}

`-s name=v1,v2,...` adds one axis to the grid (crossed with the listed trials, if any). Values no trial
sets come from the base config: the command's own flags or the pipeline's parameters; a parameter
some trials set and others leave out takes the base value in those others.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import ConfigError, TrainConfig, names, param, parse_and_check
from training.promotion import PromotionRule

MAX_TRIALS = 256
TRIAL_TAG = "sweep_trial"  # on a trial's run: its index, how a trial's runs are found again
NOT_SWEPT = ("data", "checkpoint_dir", "resume", "devices")  # one dataset, storage and device count
SWEPT = tuple(name for name in names(TrainConfig) if name not in NOT_SWEPT)


def trial_run_name(index: int) -> str:
    return f"trial-{index}"


@dataclass(frozen=True)
class Trial:
    """Trial `index` (1-based) sets `values` over the base config."""

    index: int
    values: dict[str, Any]

    @property
    def run_name(self) -> str:
        return trial_run_name(self.index)

    def config(self, base: TrainConfig) -> TrainConfig:
        return base.replace(**self.values)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "values": self.values}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Trial:
        loaded = json.loads(text)
        return cls(loaded["index"], loaded["values"])


def load(spec: str | None, axes: list[str], base: TrainConfig) -> list[Trial]:
    """The trials of a SPEC (a file's path or the text itself) and `-s` axes, each checked against
    TrainConfig over `base`. Raises ConfigError naming the trial and the field."""
    if base.resume:
        raise ConfigError("resume does not apply to a sweep: every trial starts fresh (a retried trial "
                          "task still resumes its own checkpoint)")
    listed, grid = _read_spec(spec) if spec else ([{}], {})
    for axis in axes:
        name, separator, values = axis.partition("=")
        if not separator or not name or not values:
            raise ConfigError(f"each -s must be NAME=V1,V2,... (got {axis!r})")
        grid[name.strip()] = values.split(",")
    combinations = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    trials = [{**listed_values, **combination} for listed_values in listed for combination in combinations]
    if not trials or trials == [{}]:
        raise ConfigError("the sweep names no trials: give a SPEC or -s NAME=V1,V2,...")
    if len(trials) > MAX_TRIALS:
        raise ConfigError(f"the sweep has {len(trials)} trials; at most {MAX_TRIALS}")
    checked = [_checked(Trial(i, values), base) for i, values in enumerate(trials, start=1)]
    # What one trial sets, every trial sets: a trial that leaves it out takes the base value (or, where
    # the base leaves it to the preset, its own preset's).
    named = [name for name in SWEPT if any(name in t.values for t in checked)]
    filled = []
    for t in checked:
        config = t.config(base)
        filled.append(Trial(t.index, {name: t.values.get(name, getattr(config, name)) for name in named}))
    return filled


def _read_spec(spec: str) -> tuple[list[dict], dict[str, list]]:
    """(listed trials, grid axes) of a SPEC."""
    import yaml

    path = Path(spec)
    try:
        text = path.read_text() if path.is_file() else spec
    except OSError as err:
        raise ConfigError(f"sweep spec {spec}: {err.strerror}") from None
    if text is spec and not text.lstrip().startswith(("{", "[", "-")) and ":" not in text:
        raise ConfigError(f"sweep spec {spec}: no such file")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"sweep spec {spec}: not YAML or JSON ({str(err).splitlines()[0]})") from None
    if isinstance(loaded, dict):
        return [{}], {name: values if isinstance(values, list) else [values]
                      for name, values in loaded.items()}
    if isinstance(loaded, list) and loaded and all(isinstance(t, dict) for t in loaded):
        return loaded, {}
    raise ConfigError(f"sweep spec {spec}: must be a mapping of parameter -> values (a grid) "
                      "or a list of mappings (the trials)")


def _checked(trial: Trial, base: TrainConfig) -> Trial:
    values = {}
    for name, raw in trial.values.items():
        if name not in names(TrainConfig):
            raise ConfigError(f"trial {trial.index}: {name} is not a training parameter")
        if name in NOT_SWEPT:
            raise ConfigError(f"trial {trial.index}: {name} cannot vary within a sweep "
                              f"(sweepable: {', '.join(SWEPT)})")
        try:
            values[name] = parse_and_check(param(TrainConfig, name), raw)
        except ConfigError as err:
            raise ConfigError(f"trial {trial.index}: {err}") from None
    checked = Trial(trial.index, values)
    try:
        checked.config(base)
    except ConfigError as err:
        raise ConfigError(f"trial {trial.index}: {err}") from None
    return checked


def swept_names(trials: list[Trial]) -> list[str]:
    """The parameters whose value differs between trials, in TrainConfig's order."""
    return [name for name in SWEPT
            if len({json.dumps(t.values.get(name)) for t in trials}) > 1]


# ---- ranking ----

@dataclass(frozen=True)
class Outcome:
    """What became of one trial: `finished` with its training and evaluation runs, or `failed`."""

    trial: Trial
    status: str
    training_run_id: str | None = None
    evaluation_run_id: str | None = None
    error: str = ""

    def to_json(self) -> str:
        return json.dumps({"trial": json.loads(self.trial.to_json()), "status": self.status,
                           "training_run_id": self.training_run_id,
                           "evaluation_run_id": self.evaluation_run_id, "error": self.error})

    @classmethod
    def from_json(cls, text: str) -> Outcome:
        loaded = json.loads(text)
        trial = Trial.from_json(json.dumps(loaded.pop("trial")))
        return cls(trial, **loaded)


def failed(trial: Trial, error: str) -> Outcome:
    return Outcome(trial, "failed", error=error)


@dataclass(frozen=True)
class Ranking:
    """Finished trials best first (by FID), then the failed ones; `winner` is the rule's pick."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    winner: Outcome | None = None


def rank(outcomes: list[Outcome], evaluations: dict[str, dict[str, float]], rule: PromotionRule,
         swept: list[str]) -> Ranking:
    """The winner is the trial the promotion rule leaves as champion when the finished trials are
    promoted one after another, worst FID first: a lower FID wins only by the rule's margin and
    without losing more classes than it allows, exactly as against the registry's champion. A trial
    covering too few classes to be promoted at all holds the lead only until one with a lower FID comes."""
    finished = sorted((o for o in outcomes if o.status == "finished"),
                      key=lambda o: evaluations[o.evaluation_run_id]["fid"])
    winner = None
    for outcome in reversed(finished):
        challenger = evaluations[outcome.evaluation_run_id]
        leader = winner and evaluations[winner.evaluation_run_id]
        if leader is None or not rule.admits(leader)[0] or rule.decide(challenger, leader)[0]:
            winner = outcome
    rows = []
    for place, outcome in enumerate(finished + [o for o in outcomes if o.status != "finished"], start=1):
        evaluation = evaluations.get(outcome.evaluation_run_id, {})
        rows.append({"rank": place if outcome.status == "finished" else None,
                     "trial": outcome.trial.index,
                     **{name: outcome.trial.values.get(name) for name in swept},
                     "fid": evaluation.get("fid"), "classes_covered": evaluation.get("classes_covered"),
                     "status": outcome.status, "winner": outcome is winner,
                     "training_run_id": outcome.training_run_id, "error": outcome.error})
    return Ranking(rows, winner)
