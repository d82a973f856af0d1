"""The rules by which an open scan's file vouches for its frames (no I/O: pure checks and notes).

A merged file says ``complete`` only when it holds every frame of the acquisition exactly once, each
integrated with the file's settings on the file's radial axis. These are the checks
:class:`merge_scan.OpenScan` makes on every batch before anything is logged or written, and the
notes it lists as failures when the file cannot vouch for its frames:

* the acquisition's frame count (``total_frames``): never announced, or announced twice differently;
* frame numbers outside the acquisition's ``1..N``;
* a batch integrated on another radial axis than the file's (same settings fingerprint, but the
  detector's mask, which the fingerprint does not cover, differed);
* a part index whose raw file is another path than the one this file recorded for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Two radial axes are the same binning when they differ by no more than this many float32 ulps of
#: the axis' largest value. pyFAI computes bin positions in float32 in several of its engines (CSR,
#: OpenCL), so two Integrators with the same settings may give axes that differ in the last float32
#: bits; an axis that really differs (another mask: c_radial_mask.py measured 0.048..9.58 against
#: 0.044..8.83 degrees) differs by percent, eight orders of magnitude more.
AXIS_ULPS = 4


@dataclass
class Totals:
    """Every frame count announced for one acquisition. The largest one counts (so ``missing`` asks
    for the most frames); more than one means the file cannot vouch for its frames."""

    seen: set[int] = field(default_factory=set)

    def learn(self, total: int | None) -> bool:
        """Note one announced total; True when it is new (to be logged, and maybe disputed)."""
        if not total or int(total) in self.seen:
            return False
        self.seen.add(int(total))
        return True

    @property
    def value(self) -> int | None:
        return max(self.seen) if self.seen else None

    @property
    def disputed(self) -> bool:
        return len(self.seen) > 1

    def dispute_note(self) -> str:
        totals = " and as ".join(str(n) for n in sorted(self.seen))
        return (
            f"the acquisition's frame count was announced as {totals}: the file cannot vouch for its frames "
            f"(frames up to {self.value} are expected)"
        )


def unknown_total_note(reason: str, last: int) -> str:
    """Why a scan closed without ever learning its frame count is not complete."""
    return (
        f"the acquisition's frame count was never announced; closed by {reason or 'the scan timeout'}: "
        f"frames after {last} cannot be vouched for"
    )


def outside(numbers: np.ndarray, total: int | None) -> np.ndarray:
    """Mask of the frame numbers outside the acquisition's ``1..total`` (none when it is unknown)."""
    numbers = np.asarray(numbers, np.int64)
    if not total:
        return np.zeros(numbers.shape, bool)
    return (numbers < 1) | (numbers > int(total))


def outside_note(total: int, what: str = "not merged") -> str:
    return f"frame number outside the acquisition's 1..{total}: {what}"


def axis_problem(axis: np.ndarray, file_axis: np.ndarray) -> str:
    """Why a batch integrated on ``axis`` cannot go into a file on ``file_axis``; "" when they are the
    same binning (within float32 round-off, :data:`AXIS_ULPS`)."""
    a, f = np.asarray(axis, np.float64), np.asarray(file_axis, np.float64)
    if a.shape == f.shape and a.size:
        scale = float(np.nanmax(np.abs(f))) if np.isfinite(f).any() else 0.0
        tolerance = AXIS_ULPS * float(np.finfo(np.float32).eps) * scale
        if np.all(np.abs(a - f) <= tolerance):
            return ""
    return f"integrated on another radial axis ({_span(a)}) than this file's ({_span(f)}): not merged"


def _span(axis: np.ndarray) -> str:
    if not axis.size:
        return "no bins"
    return f"{axis[0]:.6g}..{axis[-1]:.6g}, {axis.size} bins"


def part_note(part: int, path: str, recorded: str) -> str:
    return f"part {part} came from {path}, this file's part {part} is {recorded}: not merged"
