"""The files derived from uv.lock, the one lock of every extra on every platform: the hashed requirements
that each install uses (`make install`, the images) and the MLflow project's conda.yaml.

    python -m infra.lockfiles          rewrite them (`make lock` runs `uv lock` first)
    python -m infra.lockfiles --check  exit 1 while one differs from the lock (tests/test_lockfiles.py)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"
CONDA_YAML = ROOT / "conda.yaml"
PYTHON = "3.11"

# requirements/<name>.txt -> what it installs: the main dependencies and these extras, or only a dependency
# group; never the project itself
EXPORTS: dict[str, tuple[str, ...]] = {
    "cpu-jax-dev": ("--extra=cpu", "--extra=jax", "--extra=dev"),  # `make install`, here and in CI
    "gpu-jax-cuda-dev": ("--extra=gpu", "--extra=jax-cuda", "--extra=dev"),  # the same on a CUDA machine
    "cpu": ("--extra=cpu",),  # the component image
    "gpu-jax-cuda": ("--extra=gpu", "--extra=jax-cuda"),  # the CUDA component image
    "server": ("--only-group=server",),  # the tracking-server image
    "serving": ("--only-group=serving",),  # the serving image (MLServer)
    "storage-initializer": ("--only-group=storage-initializer",),  # KServe's, in the container tests
}
INSTALLER = REQUIREMENTS / "uv.txt"  # uv alone, hashed: `make install` installs it with pip, the rest with it
CONDA = ("--extra=gpu", "--extra=jax-cuda")  # `mlflow run .` trains on a GPU (and runs on a CPU too)

GENERATED = "# Generated from uv.lock by `make lock` (infra/lockfiles.py); edit pyproject.toml, not this."


def uv_export(selection: tuple[str, ...], hashes: bool = True) -> str:
    from uv import find_uv_bin

    command = [find_uv_bin(), "export", "--frozen", "--no-header", "--no-default-groups",
               "--no-emit-project", *selection]
    if not hashes:
        command += ["--no-hashes", "--no-annotate"]
    return subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def requirements(name: str) -> str:
    selection = " ".join(EXPORTS[name])
    usage = f"# pip install --require-hashes -r requirements/{name}.txt  (uv export {selection})"
    return f"{GENERATED}\n{usage}\n" + uv_export(EXPORTS[name])


def installer() -> str:
    """The lock's uv (from the dev extra), with its hashes and nothing else."""
    block = re.search(r"^uv==.*?(?=^\S|\Z)", uv_export(EXPORTS["cpu-jax-dev"]), re.MULTILINE | re.DOTALL)
    usage = "# pip install --require-hashes -r requirements/uv.txt  (uv.lock's uv; make install uses it)"
    return f"{GENERATED}\n{usage}\n{block[0]}"


def conda_yaml() -> str:
    pins = [line for line in uv_export(CONDA, hashes=False).splitlines()
            if line.strip() and not line.startswith("#")]
    environment = {"name": "mnist-gan", "channels": ["conda-forge"],
                   "dependencies": [f"python={PYTHON}", "pip", {"pip": pins}]}
    header = [GENERATED,
              "# The environment of `mlflow run .`: conda builds it by default; `--env-manager virtualenv`",
              "# installs these same pins, and `--env-manager uv` installs from uv.lock itself.",
              f"# The CUDA build (uv export {' '.join(CONDA)}); it runs on a CPU as well."]
    return "\n".join(header) + "\n" + yaml.safe_dump(environment, sort_keys=False, width=200)


def expected() -> dict[Path, str]:
    files = {REQUIREMENTS / f"{name}.txt": requirements(name) for name in EXPORTS}
    files[INSTALLER] = installer()
    files[CONDA_YAML] = conda_yaml()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.lockfiles", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report the files that differ")
    args = parser.parse_args(argv)
    files = expected()
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{_shown(path)} differs from uv.lock: run `make lock`", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text(files[path])
    print(f"{len(stale)} of {len(files)} files rewritten from uv.lock: "
          f"{', '.join(map(_shown, stale)) or 'none differed'}")
    return 0


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    sys.exit(main())
