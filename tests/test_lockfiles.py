"""One lock, uv.lock, for every extra on every platform: it agrees with pyproject.toml, the hashed
requirements and conda.yaml are generated from it, every install uses them, and this venv is what they pin."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement
from uv import find_uv_bin

from infra import lockfiles
from tests.conftest import ROOT


def pins(text: str) -> dict[str, tuple[str, str]]:
    """name -> (version, marker) of a requirements file or a conda.yaml's pip list."""
    found = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("- ")
        if re.match(r"[A-Za-z0-9]", line) and "==" in line:
            requirement = Requirement(line.rstrip(" \\"))
            key = f"{requirement.name.lower()} {requirement.marker or ''}"
            found[key] = (str(requirement.specifier).removeprefix("=="), str(requirement.marker or ""))
    return found


def test_the_lock_agrees_with_pyproject():
    done = subprocess.run([find_uv_bin(), "lock", "--check", "--offline"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, f"uv.lock is stale, run `make lock`:\n{done.stderr}"


def test_requirements_and_conda_yaml_are_what_the_lock_generates():
    done = subprocess.run([sys.executable, "-m", "infra.lockfiles", "--check"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_a_file_edited_by_hand_is_reported_then_rewritten_from_the_lock(tmp_path, monkeypatch, capsys):
    edited = tmp_path / "conda.yaml"
    edited.write_text((ROOT / "conda.yaml").read_text().replace("mlflow==3.17.2", "mlflow==3.17.1"))
    monkeypatch.setattr(lockfiles, "CONDA_YAML", edited)
    assert lockfiles.main(["--check"]) == 1 and "mlflow==3.17.1" in edited.read_text()
    assert f"{edited} differs from uv.lock" in capsys.readouterr().err
    assert lockfiles.main([]) == 0
    assert edited.read_text() == (ROOT / "conda.yaml").read_text()


def test_conda_yaml_pins_what_the_cuda_image_installs():
    conda = pins((ROOT / "conda.yaml").read_text())
    image = pins((ROOT / "requirements" / "gpu-jax-cuda.txt").read_text())
    assert conda == image and {"tensorflow ", "jax ", "jax-cuda12-plugin ", "mlflow "} <= conda.keys()


def test_every_extra_and_group_is_exported_and_every_pin_has_a_hash():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    selected = {flag.split("=", 1)[1] for flags in lockfiles.EXPORTS.values() for flag in flags}
    groups = set(project["dependency-groups"]) - set(project["tool"]["uv"]["default-groups"])
    assert selected == set(project["project"]["optional-dependencies"]) | groups
    for name in lockfiles.EXPORTS:
        blocks = re.split(r"\n(?=[A-Za-z0-9])", (ROOT / "requirements" / f"{name}.txt").read_text())
        requirements = [block for block in blocks if "==" in block.split("\n")[0]]
        assert len(requirements) > 50, name
        unhashed = [block.split()[0] for block in requirements if "--hash=sha256:" not in block]
        assert not unhashed, f"{name}: {unhashed}"


def test_the_serving_group_pins_the_projects_versions():
    """The serving image installs its group without the project: what the logged model imports is named
    there again, at the version the project (and its cpu extra) pins."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]

    def specifiers(requirements: list[str]) -> dict[str, str]:
        return {Requirement(r).name: str(Requirement(r).specifier) for r in requirements}

    pinned = specifiers([*project["dependencies"], *project["optional-dependencies"]["cpu"]])
    serving = specifiers(pyproject["dependency-groups"]["serving"])
    shared = serving.keys() & pinned.keys()
    assert {"mlflow", "keras", "tensorflow-cpu", "numpy", "pandas", "scipy", "pillow"} <= shared
    assert {name: serving[name] for name in shared} == {name: pinned[name] for name in shared}


def test_this_environment_is_the_locked_one():
    """`make install` installed requirements/cpu-jax-dev.txt with its hashes: every pin that applies here
    is the installed version."""
    wrong = {}
    for key, (version, marker) in pins((ROOT / "requirements" / "cpu-jax-dev.txt").read_text()).items():
        name = key.split()[0]
        if marker and not Requirement(f"{name} ; {marker}").marker.evaluate():
            continue
        if metadata.version(name) != version:
            wrong[name] = (version, metadata.version(name))
    assert not wrong, f"pinned vs installed: {wrong}"


def test_every_install_uses_a_hashed_export():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -qq --require-hashes -r requirements/uv.txt" in makefile  # then uv, the rest
    assert "$(UV_PIP) --require-hashes -r $(LOCKED)" in makefile
    default = re.search(r"^EXTRAS \?= (\S+)", makefile, re.MULTILINE).group(1)
    assert default.replace(",", "-") in lockfiles.EXPORTS
    for name in re.findall(r"--build-arg REQUIREMENTS=(\S+)", makefile):
        assert name in lockfiles.EXPORTS, name
    component = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    assert "USER 10001" in component and "ARG REQUIREMENTS=cpu" in component
    server = (ROOT / "infra" / "docker" / "server.Dockerfile").read_text()
    serving = (ROOT / "infra" / "docker" / "serving.Dockerfile").read_text()
    for dockerfile in (component, server, serving):
        assert "pip install --require-hashes --no-deps -r /tmp/requirements.txt" in dockerfile
    assert "COPY requirements/server.txt" in server and "COPY requirements/serving.txt" in serving
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!requirements/" in ignored and ".venv" not in "".join(ignored[2:])
