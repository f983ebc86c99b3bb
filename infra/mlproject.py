"""Write the MLproject file from TrainConfig and JobConfig: `python -m infra.mlproject > MLproject`
(`make mlproject`). tests/test_project.py fails while the committed file differs from this output."""

from __future__ import annotations

from training.cli import JOB_PARAMS, RULE_PARAMS, WORKERS
from training.config import JobConfig, Param, TrainConfig, param, params

MLFLOW_TYPES = {"int": "int", "float": "float", "str": "string", "bool": "string"}



def entry_points(train=TrainConfig, job=JobConfig) -> dict[str, tuple[str, list]]:
    """Entry point -> (what it does, its parameters); a plain name stands for a required string."""
    return {
        "main": ("prepare data -> train -> evaluate -> register -> promote, nested runs under one parent",
                 [*params(train), *(param(job, name) for name in JOB_PARAMS)]),
        "train": ("train a GAN", params(train)),
        "sweep": (("train the trials of spec (a YAML/JSON file or text, see docs/SWEEPS.md), `workers` at "
                   "a time, under one parent run; rank them, register and promote the best"),
                  ["spec", WORKERS, *params(train), *(param(job, name) for name in JOB_PARAMS)]),
        "evaluate": ("score a generator (run id, runs:/, models:/ or .keras) against MNIST's test split",
                     ["generator", param(train, "data"), param(job, "samples"), param(train, "seed")]),
        "register": ("register a trained generator as the model's challenger",
                     ["training_run_id", "evaluation_run_id", param(job, "model_name")]),
        "promote": (("make the challenger champion if the promotion rule says so, scored head to head "
                     "with the champion on data's test split"),
                    [param(train, "data"),
                     *(param(job, name) for name in ("model_name", "samples", *RULE_PARAMS))]),
        "rollback": ("point champion back at the version it replaced", [param(job, "model_name")]),
    }


def _spec(p: Param | str) -> str:
    if isinstance(p, str):
        return "{type: string}"
    default = str(p.default).lower() if p.type == "bool" else p.default
    shown = f'"{default}"' if isinstance(default, str) else repr(default)
    return f"{{type: {MLFLOW_TYPES[p.type]}, default: {shown}}}"


def render(train=TrainConfig, job=JobConfig) -> str:
    lines = ["# Generated from training/config.py by `make mlproject`; edit the config, not this file.",
             "name: mnist-gan", "", "conda_env: conda.yaml", "", "entry_points:"]
    for entry, (purpose, entry_params) in entry_points(train, job).items():
        lines += [f"  # {purpose}", f"  {entry}:", "    parameters:"]
        names = [p if isinstance(p, str) else p.name for p in entry_params]
        lines += [f"      {name}: {_spec(p)}" for name, p in zip(names, entry_params)]
        lines += ["    command: >-", f"      python -m training.cli {entry}"]
        lines += [f"      --{name.replace('_', '-')}={{{name}}}" for name in names]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
