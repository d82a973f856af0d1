"""Result file names that never overwrite: ``<stem>.nxs``, then ``<stem>_v001.nxs``, ``_v002``, …

This is the P02.2 beamline's convention for reintegrations. The name is *reserved* by creating the
file with O_EXCL, so two processes choosing a name at the same moment cannot both get it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import OutputError

MAX_VERSIONS = 999
_VERSION_RE = re.compile(r"_v\d{3}$")


def candidate_names(path: Path):
    yield path
    stem = _VERSION_RE.sub("", path.stem)
    for version in range(1, MAX_VERSIONS + 1):
        yield path.with_name(f"{stem}_v{version:03d}{path.suffix}")


def reserve_output(path: str | Path) -> Path:
    """Create and return the first free name in the version series of ``path`` (an empty file)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"output directory {path.parent} cannot be created ({exc})") from exc
    for candidate in candidate_names(path):
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create result file {candidate} ({exc})") from exc
        os.close(fd)
        return candidate
    raise OutputError(f"{path} and all {MAX_VERSIONS} versions _v001.._v{MAX_VERSIONS} exist; choose another output")
