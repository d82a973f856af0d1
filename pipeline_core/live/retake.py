"""The same file name acquired again: a new acquisition told apart from a repeated announcement.

Why: an aborted scan is often restarted under its name, and the detector overwrites its module files
in place (HDF5 truncating the same inode). Scans are keyed by stem and a part already taken is
ignored when announced again -- which is right for the duplicates triggers send, and wrong here:
the new acquisition's first parts were dropped and its later ones merged into the old scan's file,
a ``complete`` file mixing two acquisitions. So the Stitcher remembers what each part's files were
when it took them (:func:`~.part_checker.file_stamps`) and the ``lambda`` trigger numbers its
acquisitions; a taken part announced again with other files, or of another acquisition, starts a
new scan (``<stem>#2``, which the Merger writes to a new file). The old scan keeps what it had; the
frames it had not taken are lost (their files hold the new acquisition) and go down the chain as
failed, so its file ends ``incomplete`` and says why.

Items of the old scan still queued fail as they are handed out (:func:`written_over`; the Stitcher
counts them in framesFailed). One handed out before the Stitcher noticed is caught by the Integrator:
every item carries its files' stamps as taken (``WorkItem.file_stamps``), compared right before and
right after the read (:mod:`pipeline_core.processing.file_stamps`), a difference failing the item.

Plain functions of a :class:`~.scan_tracker.ScanRecord` and the disk, testable without a stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..processing.file_stamps import unchanged

if TYPE_CHECKING:  # the tracker asks :func:`written_over` of each item it hands out
    from .scan_tracker import ScanRecord


def changed_files(scan: ScanRecord, part: int) -> list[Path]:
    """The module files of a taken part that changed since it was taken (none for a part never
    taken whole: a failed part announced again is still a repeat)."""
    taken = scan.stamps.get(part)
    if not taken:
        return []
    return [f for f, stamp in taken.items() if not unchanged(f, stamp)]


def why_new(scan: ScanRecord, part: int, acquisition: int | None = None) -> str:
    """Why an announcement of ``part`` belongs to a new acquisition under ``scan``'s name ('' when it
    is ``scan``'s). ``acquisition``: the ``lambda`` trigger's number, which alone decides where given
    (the detector says when it starts again; file times are not needed)."""
    if acquisition is not None and scan.acquisition is not None:
        if acquisition == scan.acquisition:
            return ""
        return f"the detector started acquisition {scan.info.stem} again (part {part} written anew)"
    if part not in scan.done_parts:
        return ""
    changed = changed_files(scan, part)
    if not changed:
        return ""
    names = ", ".join(f.name for f in changed)
    return f"part {part} of {scan.info.stem} announced again with other files ({names} written anew since it was taken)"


def written_over(scan: ScanRecord, part: int) -> str:
    """Why an item of ``part`` must not be integrated: its files were written over by the acquisition
    that took the scan's name over ('' when it may, and for every scan still the live one)."""
    if not scan.superseded_by:
        return ""
    changed = changed_files(scan, part)
    if not changed:
        return ""
    return (
        f"{', '.join(f.name for f in changed)} written over by a new acquisition under the name {scan.info.stem} "
        f"(scan {scan.superseded_by}) before these frames were integrated"
    )


def stale_files(scan: ScanRecord, files: list[Path]) -> list[Path]:
    """Of a part's ``files``, those still as the earlier acquisition under the scan's name left them:
    not written again yet, so not this scan's (empty for a scan that took no name over)."""
    if not scan.stale:
        return []
    return [f for f in files if f in scan.stale and scan.stale[f] is not None and unchanged(f, scan.stale[f])]


def lost_frames(scan: ScanRecord) -> list[int]:
    """Frames of a scan taken over that it never took: their files now hold the new acquisition.
    Empty when its frame count is not known (the Merger cannot miss what it does not expect)."""
    total = scan.info.total_frames
    if not total:
        return []
    taken = {n for _, numbers in scan.parts.values() for n in numbers}
    return [n for n in range(1, total + 1) if n not in taken]


def first_untaken_part(scan: ScanRecord) -> int:
    """The index the lost frames are listed under: the first part the scan did not take."""
    part = 0
    while part in scan.done_parts:
        part += 1
    return part
