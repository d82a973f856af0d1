"""The journal beside an open merged file: which scan and settings it holds, so a restart resumes it.

A Merger killed with a file open (kill -9, a crash) leaves ``<stem>.nxs.part`` and its journal
``<stem>.nxs.journal``; the next start reads every journal of its output directory and continues
those files instead of starting new ones. The journal is replaced atomically (write, then rename),
so a kill while writing it leaves the previous one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..paths import open_new_file

JOURNAL_SUFFIX = ".journal"


def journal_path(path: Path) -> Path:
    """The journal beside a result file: which scan and settings it holds, while it is open.

    ``path`` is the final name (``X.nxs`` -> ``X.nxs.journal``); the bytes are at ``X.nxs.part``.
    """
    return path.with_name(path.name + JOURNAL_SUFFIX)


@dataclass(frozen=True)
class JournalEntry:
    """What a restarted Merger needs to continue a file: its scan, the settings it was opened with
    (``IntegrationSettings.to_dict()``) and their fingerprint, and what it knew of the acquisition."""

    scan: str
    settings: dict[str, Any] = field(default_factory=dict)
    settings_hash: str = ""
    total_frames: int | None = None
    raw_file: str = ""

    def write(self, path: Path) -> None:
        """Write the journal of the result file ``path`` (its final name), replacing any before."""
        target = journal_path(path)
        tmp = target.with_suffix(".tmp")
        with os.fdopen(open_new_file(tmp), "w") as f:  # a link planted at the name is refused, not followed
            f.write(json.dumps(asdict(self)))
        os.replace(tmp, target)

    @classmethod
    def read(cls, journal: Path) -> JournalEntry:
        """Read one journal; OSError, ValueError or KeyError when it is unreadable or incomplete."""
        entry = json.loads(journal.read_text())
        if not isinstance(entry, dict):
            raise ValueError(f"{journal}: expected a JSON object, got {type(entry).__name__}")
        return cls(
            entry["scan"],
            entry["settings"],
            entry["settings_hash"],
            total_frames=entry.get("total_frames"),
            raw_file=entry.get("raw_file", ""),
        )


def journals(directory: Path) -> list[Path]:
    """The journals of the files left open in ``directory``, in name order."""
    return sorted(directory.glob(f"*.nxs{JOURNAL_SUFFIX}"))


def set_aside(journal: Path) -> None:
    """Keep a journal that could not be resumed (as ``.broken``) so it is not tried again."""
    journal.rename(journal.with_name(journal.name + ".broken"))


def remove(path: Path) -> None:
    """Drop the journal of ``path`` (the reserved final name): its file is finished."""
    journal_path(path).unlink(missing_ok=True)
