"""Pressure per frame, with what was used and why not: the one result every output is made from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .lattice import FRAME_NOTHING_FITTED, FRAME_PAIR_DISAGREES, FRAME_PRECISE_OUTVOTED, FRAME_UNCHECKED, OUTLIER
from .peaks import FIT_PROBLEMS


@dataclass(frozen=True)
class PressureSeries:
    """Rows are frames (sorted by frame number, each once); columns of ``d*``/``left_out`` are the
    marker's chosen reflections, named by ``labels``. NaN pressure: see :meth:`reason`."""

    labels: tuple[str, ...]
    frame_number: np.ndarray
    pressure: np.ndarray
    pressure_sigma: np.ndarray
    lattice_a: np.ndarray
    lattice_a_sigma: np.ndarray
    d: np.ndarray
    d_sigma: np.ndarray
    left_out: np.ndarray
    outlier_sigma: np.ndarray
    frame_problem: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_number)

    @classmethod
    def empty(cls, labels: tuple[str, ...]) -> PressureSeries:
        r = len(labels)
        f, i = np.empty(0), np.empty(0, np.int64)
        return cls(labels, i, f, f, f, f, np.empty((0, r)), np.empty((0, r)), np.empty((0, r), np.int8),
                   np.empty((0, r)), np.empty(0, np.int8))  # fmt: skip

    @classmethod
    def concat(cls, parts: list[PressureSeries]) -> PressureSeries:
        """Parts joined, sorted by frame number; a frame number seen twice keeps its first result."""
        if not parts:
            raise ValueError("concat needs at least one part")
        fields = [f.name for f in dataclasses.fields(cls) if f.name != "labels"]
        joined = {name: np.concatenate([getattr(p, name) for p in parts]) for name in fields}
        _, first = np.unique(joined["frame_number"], return_index=True)
        return cls(parts[0].labels, **{k: v[first] for k, v in joined.items()})

    def take(self, index: np.ndarray) -> PressureSeries:
        """The rows ``index`` (in that order)."""
        fields = [f.name for f in dataclasses.fields(self) if f.name != "labels"]
        return PressureSeries(self.labels, **{k: getattr(self, k)[index] for k in fields})

    def with_rows(self, index: np.ndarray, other: PressureSeries) -> PressureSeries:
        """A copy with rows ``index`` replaced by ``other``'s rows (same frames, a second try)."""
        fields = [f.name for f in dataclasses.fields(self) if f.name != "labels"]
        out = {k: getattr(self, k).copy() for k in fields}
        for k in fields:
            out[k][index] = getattr(other, k)
        return PressureSeries(self.labels, **out)

    def used(self, i: int) -> list[str]:
        """Labels of the reflections frame ``i`` (row index) was computed from."""
        if self.frame_problem[i]:
            return []
        return [lab for lab, code in zip(self.labels, self.left_out[i], strict=True) if code == 0]

    def left_out_text(self, i: int) -> str:
        """``220: off the others by 12.3 sigma (...)``; reflections not used, and why, ``;``-joined."""
        out = []
        for j, (lab, code) in enumerate(zip(self.labels, self.left_out[i], strict=True)):
            if code == OUTLIER:
                far = self.outlier_sigma[i, j]
                out.append(f"{lab}: off the others by {far:.1f} sigma (a sample peak overlapping it?)")
            elif code:
                out.append(f"{lab}: {FIT_PROBLEMS[int(code)]}")
        return "; ".join(out)

    def reason(self, i: int) -> str:
        """Why frame ``i`` has no pressure ("" when it has one)."""
        code = int(self.frame_problem[i])
        if code == FRAME_PAIR_DISAGREES:
            a, b = (lab for lab, c in zip(self.labels, self.left_out[i], strict=True) if c == 0)
            return f"{a} and {b} disagree beyond their uncertainties: cannot tell which one a sample peak overlaps"
        if code == FRAME_PRECISE_OUTVOTED:
            labels = ", ".join(lab for lab, c in zip(self.labels, self.left_out[i], strict=True) if c == 0)
            return (
                f"{labels} disagree beyond their uncertainties and the most precise is outvoted: cannot tell "
                "which ones a sample peak overlaps"
            )
        if code == FRAME_UNCHECKED:
            (alone,) = (lab for lab, c in zip(self.labels, self.left_out[i], strict=True) if c == 0)
            return (
                f"only {alone} fitted, nothing to check that it is {alone} and not a neighbour "
                f"(moved too fast from the frames before?) ({self.left_out_text(i)})"
            )
        if code == FRAME_NOTHING_FITTED:
            return f"no reflection fitted ({self.left_out_text(i)})"
        return ""

    def records(self) -> list[dict]:
        """One dict per frame, as ``xrd-pipeline pressure --json`` prints them (NaN becomes None)."""

        def num(v: float) -> float | None:
            return float(v) if np.isfinite(v) else None

        return [
            {
                "frame_number": int(self.frame_number[i]),
                "pressure_gpa": num(self.pressure[i]),
                "pressure_sigma_gpa": num(self.pressure_sigma[i]),
                "lattice_a_angstrom": num(self.lattice_a[i]),
                "reflections_used": self.used(i),
            }
            for i in range(len(self))
        ]
