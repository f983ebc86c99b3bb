"""Files a job writes where a person said (`sample --out`, `data download --to`): refused before any
work if one of them exists, then each written whole beside its target and put
in place only while the target is still absent. Nothing already written is ever replaced."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from training.config import ConfigError


def check_new(flag: str, files: Sequence[Path], suffixes: tuple[str, ...]) -> None:
    """`files` are what the command writes for `flag`, the first the path given, which must end in one
    of `suffixes`; ConfigError naming the flag if it does not, or if any of them exists."""
    given = files[0]
    if given.suffix not in suffixes:
        raise ConfigError(f"{flag} must end in {' or '.join(suffixes)} (got {given})")
    existing = [str(path) for path in files if path.exists() or path.is_symlink()]
    if existing:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{flag}={given}: {', '.join(existing)} {verb}; choose a new file "
                          "(nothing is overwritten)")


def write_new(target: Path, write: Callable[[Path], object]) -> Path:
    """`write(path)` fills a temporary file beside `target` (same suffix, for writers that go by it),
    which then becomes `target` only if no file has appeared there meanwhile (FileExistsError)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex[:12]}{target.suffix}")
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask's permissions
    try:
        write(temporary)
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        _link_if_absent(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _link_if_absent(source: Path, target: Path) -> None:
    """A hard link, which fails if `target` exists; where the filesystem has none, an exclusive create
    (the bytes are then copied, not put in place at once, but never over another file)."""
    try:
        try:
            os.link(source, target)
        except FileExistsError:
            raise
        except OSError:
            with source.open("rb") as data, target.open("xb") as copy:
                shutil.copyfileobj(data, copy)
    except FileExistsError:
        raise FileExistsError(f"{target} appeared while this command wrote it; it was left as it is"
                              ) from None
