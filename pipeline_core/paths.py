"""Confining paths to configured roots: what operators and clients may make the pipeline read or write.

A path given by a client (an announcement, Reintegrate's argument, a PONI or mask attribute) is
resolved — ``..`` collapsed, symbolic links followed — and must then lie inside one of the roots.
Resolving first is what stops ``/data/../etc/passwd`` and a symlink that points out of the tree.

The check is made where files are *opened* (``open_modules``, the Stitcher's search for a part's
sibling files), not only where a path enters: a folder inside the roots may hold module files that
are symbolic links to anywhere, and a sibling found by globbing was never announced by anyone.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError, SourceError


class OutsideRootsError(ConfigError, SourceError):
    """A path resolves outside the allowed roots (or cannot be resolved).

    Both a refused value (ConfigError: a command's argument is answered with it) and an input that
    cannot be read (SourceError: a part whose sibling escapes fails and is listed with this reason).
    """


def confine(path: str | Path, roots: Sequence[str | Path], what: str = "path") -> Path:
    """The resolved ``path`` if it lies inside one of ``roots``; OutsideRootsError otherwise.

    No roots means no confinement (a laptop, a test); a beamline deployment sets them.
    """
    if "\0" in str(path):
        raise OutsideRootsError(f"{what} {str(path)!r} contains a NUL character; expected a file path")
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an unknown ~user
        raise OutsideRootsError(f"{what} {path} cannot be resolved ({exc})") from None
    if not roots:
        return resolved
    for root in roots:
        if resolved.is_relative_to(Path(root).expanduser().resolve()):
            return resolved
    raise OutsideRootsError(
        f"{what} {path} resolves to {resolved}, outside the allowed root(s) {', '.join(map(str, roots))}"
    )


def inside(path: str | Path, roots: Sequence[str | Path]) -> bool:
    """Whether ``path`` resolves inside ``roots`` (always true without roots)."""
    try:
        confine(path, roots)
    except OutsideRootsError:
        return False
    return True


def file_name_problem(name: object) -> str | None:
    """Why ``name`` is not exactly one file-name component (None when it is).

    Stems and scan names come from outside (a Lambda server's ``SaveFileName``, a client's message)
    and become file names in the Merger's output folder: ``../x`` or ``a/b`` would put a file
    elsewhere, so anything but one plain component is refused, never cleaned up into something else.
    """
    if type(name) is not str:
        return f"is a {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if name in (".", ".."):
        return "is a folder reference"
    if "/" in name:
        return "contains '/' (it would name a file in another folder)"
    if "\0" in name:
        return "contains a NUL character"
    return None


def check_file_name(name: object, what: str) -> str:
    """``name`` when it is one file-name component; ConfigError naming ``what``, the value and why not."""
    problem = file_name_problem(name)
    if problem is not None:
        raise ConfigError(f"{what} {name!r} {problem}; expected one file name, without '/', not '.' or '..'")
    return str(name)


def open_new_file(path: Path) -> int:
    """A file descriptor for writing ``path`` from its start (created, or truncated), never through a
    symbolic link: a link planted at the name (to ``/etc/...``, out of the output folder) is refused
    with OSError (ELOOP) instead of being followed."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
