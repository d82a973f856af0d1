"""Result file names that never overwrite: ``<stem>.nxs``, then ``<stem>_v001.nxs``, ``_v002``, …

This is the P02.2 beamline's convention for reintegrations. A result is written under a *part*
name, ``<name>.part`` (e.g. ``ramp_00001.nxs.part``), and gets its final name only when the run
ended by itself (:func:`publish`). So Dioptas, or any reader that opens ``*.nxs``, never takes a
file that is still being written, or that a killed process left behind, for a result.

A name is *reserved* by creating its part file with O_EXCL, so two processes choosing a name at the
same moment cannot both get it; a candidate is free only when neither the name nor its part exists.
Publishing is a hard link (which fails if the target exists) and an unlink: a result is never
overwritten, even by a process that reserved the same name in some other way.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

MAX_VERSIONS = 999
PART_SUFFIX = ".part"
_VERSION_RE = re.compile(r"_v(\d{3})$")


def part_path(path: str | Path) -> Path:
    """Where the result named ``path`` is written until it is published: ``<path>.part``."""
    path = Path(path)
    return path.with_name(path.name + PART_SUFFIX)


def candidate_names(path: Path) -> Iterator[Path]:
    """``path`` itself, then ``<stem>_v001<suffix>`` … ``_v999`` (a ``_vNNN`` already in ``path`` is replaced)."""
    yield path
    stem = _VERSION_RE.sub("", path.stem)
    for version in range(1, MAX_VERSIONS + 1):
        yield path.with_name(f"{stem}_v{version:03d}{path.suffix}")


def _is_free(candidate: Path) -> bool:
    return not (os.path.lexists(candidate) or os.path.lexists(part_path(candidate)))


def reserve_output(path: str | Path) -> Path:
    """Reserve the first free name in the version series of ``path`` and return it (the final name).

    The reservation is the empty part file ``<name>.part``, created exclusively; the caller writes
    into it and calls :func:`publish` (or leaves it, when the run did not end by itself).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output directory {path.parent} cannot be created ({exc})") from exc
    for candidate in candidate_names(path):
        if not _is_free(candidate):
            continue
        part = part_path(candidate)
        try:
            fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create result file {part} ({exc})") from exc
        os.close(fd)
        if os.path.lexists(candidate):  # published by someone else between our check and our create
            os.unlink(part)
            continue
        return candidate
    raise OutputError(f"{path} and all {MAX_VERSIONS} versions _v001.._v{MAX_VERSIONS} exist; choose another output")


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the data itself is synced
        pass
    finally:
        os.close(fd)


def publish(path: str | Path) -> Path:
    """Move ``<path>.part`` to ``path`` without ever overwriting; return the name it got.

    If ``path`` was taken meanwhile (another process, a user), the next free ``_vNNN`` is used.
    """
    path = Path(path)
    part = part_path(path)
    if not part.exists():
        raise OutputError(f"{part} does not exist: nothing to publish as {path}")
    _fsync(part)
    match = _VERSION_RE.search(path.stem)
    own = int(match.group(1)) if match else 0
    # go forward from our own name: the earlier versions were taken when we reserved it
    later = [c for i, c in enumerate(candidate_names(path)) if i > own]
    for candidate in (path, *later):
        if candidate != path and not _is_free(candidate):
            continue
        try:
            os.link(part, candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise OutputError(f"cannot publish {part} as {candidate} ({exc})") from exc
            # no hard links on this file system: a rename is atomic, but only checked beforehand
            if os.path.lexists(candidate):
                continue
            os.rename(part, candidate)
        else:
            os.unlink(part)
        _fsync(candidate.parent, directory=True)
        return candidate
    raise OutputError(f"{part}: {path} and every later version exist; the result stays at {part}")
