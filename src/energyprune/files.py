"""Files: atomic writes (a killed run never leaves a half-written file behind), text reads that
name a damaged file in one line, and output folders checked before any long work starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from energyprune.errors import ConfigError, first_line

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "cache_dir",
    "check_writable",
    "check_writable_file",
    "read_text",
]


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text of ``path``; unreadable or not text is one line naming the file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} {path} is damaged or not UTF-8 text (byte {e.start}): "
            "replace it with a good copy"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {first_line(e)}") from None


def check_writable(folder: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Prove that ``folder`` can be created or written, before the work that will fill it, and
    without creating anything: a path under a file, or without permission, is one line."""
    out = Path(folder)
    existing = next(p for p in (out, *out.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {out}: {existing} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: {existing} is not writable; choose another path")
    return out


def check_writable_file(path: str | os.PathLike[str], flag: str) -> Path:
    """Like :func:`check_writable` for a file to be written at ``path``."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {target} is a folder; name a file to write")
    check_writable(target.parent, flag)
    return target


def _umask() -> int:
    """The process umask (read by setting it and putting it back: POSIX has no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600; the file gets the mode open() would give it (0644 under umask 022)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def cache_dir() -> Path:
    """Where derived data is kept between runs (decoded images, model name lists):
    ``$ENERGYPRUNE_CACHE``, default ``~/.cache/energyprune``."""
    return Path(os.environ.get("ENERGYPRUNE_CACHE", Path.home() / ".cache" / "energyprune"))
