"""Property tests: every invalid value of every CLI flag, MLproject parameter and pipeline parameter
(at submit time) gets exit code 2 and one line naming the parameter, never a traceback, and nothing is
tracked. The CLI runs in-process here (the same `main` the console script calls); test_cli.py runs
it as a subprocess."""

from __future__ import annotations

import math
import shlex

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.runner import pipeline_parameters
from tests.conftest import ROOT
from tests.support.process_state import environment_kept
from training import cli
from training.config import JobConfig, Param, TrainConfig, param, params

NO_DATA = "/nonexistent/mnist.npz"  # had a value slipped through as valid, the job still could not start
EXAMPLES = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _is(kind, text: str) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def _garbage(kind) -> st.SearchStrategy[str]:
    return st.text(alphabet="abcxyz-.,e_ +", min_size=1, max_size=8).filter(
        lambda t: not _is(kind, t) and t.strip().lower() not in ("nan", "inf", "infinity"))


def _outside(kind, low=None, high=None, low_open=False, high_open=False) -> st.SearchStrategy[str]:
    """Numbers outside [low, high] (an open end excludes its bound) as text, NaN included for floats."""
    options = []
    if kind is int:
        if low is not None:
            options.append(st.integers(max_value=low - 1))
        if high is not None:
            options.append(st.integers(min_value=high + 1))
    else:  # filtered with Python's own comparisons, which put -0.0 and 0.0 together
        if low is not None:
            options.append(st.floats(max_value=low, allow_nan=False).filter(
                lambda v: v <= low if low_open else v < low))
        if high is not None:
            options.append(st.floats(min_value=high, allow_nan=False).filter(
                lambda v: v >= high if high_open else v > high))
        options.append(st.just(math.nan))
    return st.one_of(options).map(repr)


def _bad_values(p: Param, typed: bool = True) -> st.SearchStrategy[str]:
    """Invalid values of a parameter; typed=False only those of the right type (as `mlflow run` passes
    them on after checking the MLproject's own int/float types)."""
    meta, kind = p.bounds, {"int": int, "float": float}.get(p.type)
    if "choices" in meta:
        return st.text(min_size=1, max_size=10).filter(lambda t: t not in meta["choices"] and t.strip() == t)
    if p.type == "bool":
        return st.sampled_from(["maybe", "2", "ja", "truee", "-1"])
    if meta.get("registered_model_name"):  # what MLflow's registry would refuse at register
        return st.sampled_from(["", " ", "team/gan", "gan:v2", ".", "..", "..gan", "g" * 300])
    if p.type == "str":
        return st.just("")
    low = meta.get("min", meta.get("ge", meta.get("gt")))
    high = meta.get("max", meta.get("le", meta.get("lt")))
    outside = _outside(kind, low, high, low_open="gt" in meta, high_open="lt" in meta)
    return st.one_of(outside, _garbage(kind)) if typed else outside


def _exit_and_line(argv: list[str], capsys) -> tuple[int, str]:
    try:
        with environment_kept():  # cli.main sets up the environment as its process's own
            code = cli.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def _assert_refused(argv, name, capsys):
    code, err = _exit_and_line(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and name in lines[0], (argv, err)
    assert "Traceback" not in err


@pytest.fixture(autouse=True)
def _scratch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield
    assert not (tmp_path / "mlflow.db").exists(), "a refused command tracked something"


TRAIN_FIELDS = [p for p in params(TrainConfig) if p.name != "data"]


@pytest.mark.parametrize("command", ["train", "main"])
@pytest.mark.parametrize("field", TRAIN_FIELDS, ids=[f.name for f in TRAIN_FIELDS])
@EXAMPLES
@given(data=st.data())
def test_every_training_flag_refuses_every_bad_value(command, field, data, capsys):
    value = data.draw(_bad_values(field))
    _assert_refused([command, "--data", NO_DATA, f"--{field.name.replace('_', '-')}={value}"],
                    field.name, capsys)


JOB_FLAGS = [("main", "samples"), ("evaluate", "samples"), ("promote", "min_fid_gain"),
             ("promote", "max_classes_lost"), ("main", "max_classes_lost"), ("main", "model_name"),
             ("promote", "model_name"), ("promote", "to_name"), ("register", "model_name"),
             ("sweep", "model_name")]


@pytest.mark.parametrize(("command", "name"), JOB_FLAGS, ids=[f"{c}-{n}" for c, n in JOB_FLAGS])
@EXAMPLES
@given(data=st.data())
def test_every_job_flag_refuses_every_bad_value(command, name, data, capsys):
    value = data.draw(_bad_values(cli.TO_NAME if name == "to_name" else param(JobConfig, name)))
    required = {"main": ["--data", NO_DATA], "evaluate": ["--generator", "g.keras", "--data", NO_DATA],
                "promote": [], "register": ["--training-run-id", "r1", "--evaluation-run-id", "r2"],
                "sweep": ["--data", NO_DATA, "-s", "seed=0,1"]}[command]
    _assert_refused([command, *required, f"--{name.replace('_', '-')}={value}"], name, capsys)


# The same seed range everywhere a seed is given (training, evaluation, sampling).
OTHER_FLAGS = [
    (["evaluate", "--generator", "g.keras", "--data", NO_DATA], "--seed", "seed", int, 0, 2**31 - 1),
    (["promote"], "--version", "version", int, 1, None),
    (["sample", "--model-uri", "g.keras", "--out", "s.npz"], "--count", "count", int, 1, 1_000_000),
    (["sample", "--model-uri", "g.keras", "--out", "s.npz"], "--seed", "seed", int, 0, 2**31 - 1),
    (["pipeline", "compile"], "--gpu-count", "gpu_count", int, 1, 64),
    (["deploy", "--inference-service", "mnist-gan"], "--canary-traffic-percent", "canary_traffic_percent",
     int, 0, 99),
    (["deploy", "--inference-service", "mnist-gan"], "--timeout", "timeout", int, 1, None),
    (["pipeline", "compile", "--inference-service", "mnist-gan"], "--canary-traffic-percent",
     "canary_traffic_percent", int, 0, 99)]


@pytest.mark.parametrize(("prefix", "flag", "name", "kind", "low", "high"), OTHER_FLAGS,
                         ids=[f"{p[0]}{f}" for p, f, *_ in OTHER_FLAGS])
@EXAMPLES
@given(data=st.data())
def test_every_other_flag_refuses_every_bad_value(prefix, flag, name, kind, low, high, data, capsys):
    value = data.draw(st.one_of(_outside(kind, low, high), _garbage(kind)))
    _assert_refused([*prefix, f"{flag}={value}"], name, capsys)


MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
PARAMS = {p.name: p for p in params(TrainConfig) + params(JobConfig) if p.name != "data"}
ENTRY_PARAMS = [(entry, name) for entry, spec in MLPROJECT.items() for name in spec.get("parameters", {})
                if name in PARAMS]


@pytest.mark.parametrize(("entry", "name"), ENTRY_PARAMS, ids=[f"{e}-{n}" for e, n in ENTRY_PARAMS])
@EXAMPLES
@given(data=st.data())
def test_every_mlproject_parameter_refuses_every_bad_value(entry, name, data, capsys):
    spec = MLPROJECT[entry]
    value = data.draw(_bad_values(PARAMS[name], typed=False))
    params = {key: param.get("default", "x") for key, param in spec["parameters"].items()}
    params.update({name: value}, **({"data": NO_DATA} if "data" in params else {}))
    command = spec["command"].format(**{key: shlex.quote(str(v)) for key, v in params.items()})
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "training.cli"]
    _assert_refused(argv[3:], name, capsys)


PIPELINE_DEFAULTS = pipeline_parameters()
PIPELINE_PARAMS = [name for name in PIPELINE_DEFAULTS if name in PARAMS]


@pytest.mark.parametrize("name", PIPELINE_PARAMS)
@EXAMPLES
@given(data=st.data())
def test_every_pipeline_parameter_is_refused_at_submit_before_contacting_the_cluster(name, data, capsys):
    value = data.draw(_bad_values(PARAMS[name]))
    # port 9 (discard) on 127.0.0.1: a submit that got through would fail with exit 1, not 2
    _assert_refused(["pipeline", "submit", "--host", "http://127.0.0.1:9", "-p", f"{name}={value}"],
                    name, capsys)
