"""Confining paths to configured roots: what operators and clients may make the pipeline read or write.

A path given by a client (an announcement, Reintegrate's argument, a PONI or mask attribute) is
resolved — ``..`` collapsed, symbolic links followed — and must then lie inside one of the roots.
Resolving first is what stops ``/data/../etc/passwd`` and a symlink that points out of the tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError


def confine(path: str | Path, roots: Sequence[str | Path], what: str = "path") -> Path:
    """The resolved ``path`` if it lies inside one of ``roots``; ConfigError otherwise.

    No roots means no confinement (a laptop, a test); a beamline deployment sets them.
    """
    resolved = Path(path).expanduser().resolve()
    if not roots:
        return resolved
    for root in roots:
        if resolved.is_relative_to(Path(root).expanduser().resolve()):
            return resolved
    raise ConfigError(f"{what} {path} resolves to {resolved}, outside the allowed root(s) {', '.join(map(str, roots))}")
