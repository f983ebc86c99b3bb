"""Nothing a job writes at a path a person gave replaces an existing file: `sample --out` (the .npz and
the PNG beside it), `data download --to`. Each refuses in one line, exit 2, before any work; a file
that appears while one is written is kept. `pipeline compile -o` is a build step: it replaces its YAML
whole, as a compiler does."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli
from training.new_files import write_new

# (command, the files already there, the message). Every command names what it cannot do anyway (a
# generator that does not exist, a download with no network needed): refused first means refused
# before any work.
EXISTING = [
    (["sample", "--model-uri", "no-such-generator.keras", "--out", "fig.npz"], ["fig.png"],
     "out=fig.npz: fig.png exists; choose a new file"),
    (["sample", "--model-uri", "no-such-generator.keras", "--out", "fig.npz"], ["fig.npz"],
     "out=fig.npz: fig.npz exists; choose a new file"),
    (["data", "download", "--to", "mnist.npz"], ["mnist.npz"], "to=mnist.npz: mnist.npz exists"),
]


@pytest.mark.parametrize(("command", "existing", "message"), EXISTING,
                         ids=[f"{' '.join(c[:2])}-{e[0]}" for c, e, _ in EXISTING])
def test_a_command_refuses_before_any_work_when_a_file_it_would_write_exists(command, existing, message,
                                                                              tmp_path):
    for name in existing:
        (tmp_path / name).write_bytes(b"a person's own file")
    result = run_cli(command, tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert all((tmp_path / name).read_bytes() == b"a person's own file" for name in existing)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(existing), "nothing else was written"


def test_a_pipeline_is_compiled_only_to_a_yaml_file(tmp_path):
    result = run_cli(["pipeline", "compile", "-o", "pipeline.txt"], tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "mnist-gan pipeline: error: output must end in .yaml or .yml (got pipeline.txt)"]
    assert not list(tmp_path.iterdir())


def test_compiling_again_replaces_the_pipeline_whole(tmp_path):
    (tmp_path / "pipeline.yaml").write_text("an older compile")
    result = run_cli(["pipeline", "compile", "-o", "pipeline.yaml"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pipelineInfo" in (tmp_path / "pipeline.yaml").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pipeline")] == [], "no partial file"


def test_a_file_written_whole_appears_at_once_and_nothing_else_stays(tmp_path):
    target = tmp_path / "out" / "digits.npz"
    suffixes = []

    def write(path: Path) -> None:
        suffixes.append(path.suffix)  # writers such as NumPy's and KFP's go by it
        assert not target.exists(), "the target appears only once written whole"
        path.write_bytes(b"digits")

    assert write_new(target, write) == target
    assert target.read_bytes() == b"digits" and suffixes == [".npz"]
    assert [p.name for p in target.parent.iterdir()] == ["digits.npz"], "no temporary file is left"


def test_a_file_that_appears_while_one_is_written_is_kept(tmp_path):
    target = tmp_path / "digits.npz"

    def write(path: Path) -> None:
        target.write_bytes(b"another process's file")  # it lands between the check and the end
        path.write_bytes(b"digits")

    with pytest.raises(FileExistsError, match="appeared while this command wrote it; it was left as it is"):
        write_new(target, write)
    assert target.read_bytes() == b"another process's file"
    assert [p.name for p in tmp_path.iterdir()] == ["digits.npz"], "no temporary file is left"
