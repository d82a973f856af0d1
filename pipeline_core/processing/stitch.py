"""Stitching Lambda modules into one frame, with Dioptas' convention.

The PONI files calibrated at P02.2 refer to frames assembled the way Dioptas' ``LambdaLoader`` does
it, so we must reproduce it pixel for pixel:

1. round each module's translation ``(x, y)`` to pixels; shift x so the smallest is 0 and y by the
   first module's y (the smallest, in every real file; we use the minimum so that a module above the
   first cannot index out of the frame);
2. frame shape = max over modules of ``(y + rows, x + cols)``, zero-filled;
3. module k goes to ``[y_k:y_k+rows, x_k:x_k+cols]``;
4. the whole frame is flipped upside down (``frame[::-1]``).

We write each module directly to its flipped place instead of flipping a copy, which is the same
result without an extra pass over 2.8 Mpixel. Pixels no module covers are *gaps*: they carry no
signal and are returned as a mask so integration never averages them in as zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import SourceError


@dataclass(frozen=True)
class ModulePlacement:
    row: int  # first row of the module in the un-flipped frame
    col: int
    rows: int
    cols: int


@dataclass(frozen=True)
class StitchLayout:
    """Where each module goes in the stitched frame."""

    placements: tuple[ModulePlacement, ...]
    frame_shape: tuple[int, int]

    @classmethod
    def from_offsets(
        cls,
        offsets: list[tuple[float, float]],
        module_shapes: list[tuple[int, int]],
        absent: Sequence[tuple[tuple[float, float], tuple[int, int]]] = (),
    ) -> StitchLayout:
        """Build the layout from module translations ``(x, y)`` (pixels) and module shapes (rows, cols).

        ``absent``: ``(offset, shape)`` of modules that are switched off. They take their place in the
        frame as they would if on (their pixels are gaps, so masked): the frame keeps the shape and
        every pixel keeps the place the PONI was calibrated for. Without them a frame of fewer modules
        is smaller and, flipped, shifted: every radial position would be wrong.
        """
        if not offsets or len(offsets) != len(module_shapes):
            raise SourceError(
                f"need one offset per module, got {len(offsets)} offsets for {len(module_shapes)} modules"
            )
        present = len(offsets)
        offsets = list(offsets) + [o for o, _ in absent]
        module_shapes = list(module_shapes) + [s for _, s in absent]
        xs = [int(round(float(x))) for x, _ in offsets]
        ys = [int(round(float(y))) for _, y in offsets]
        x0, y0 = min(xs), min(ys)
        placements = tuple(
            ModulePlacement(y - y0, x - x0, int(r), int(c)) for x, y, (r, c) in zip(xs, ys, module_shapes, strict=True)
        )
        height = max(p.row + p.rows for p in placements)
        width = max(p.col + p.cols for p in placements)
        layout = cls(placements, (height, width))
        layout._check_overlap()
        return cls(placements[:present], (height, width)) if absent else layout

    def _check_overlap(self) -> None:
        cover = np.zeros(self.frame_shape, dtype=np.uint8)
        for p in self.placements:
            cover[p.row : p.row + p.rows, p.col : p.col + p.cols] += 1
        if cover.max() > 1:
            raise SourceError(
                f"module translations overlap: {self.placements}; check translation/distance in the files"
            )

    @property
    def n_modules(self) -> int:
        return len(self.placements)

    def _flipped_slices(self, p: ModulePlacement) -> tuple[slice, slice]:
        height = self.frame_shape[0]
        return slice(height - p.row - p.rows, height - p.row), slice(p.col, p.col + p.cols)

    def stitch(self, modules: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        """Stitch one frame (or a stack ``(n, rows, cols)`` per module) into ``out``; gaps are 0."""
        if len(modules) != self.n_modules:
            raise SourceError(f"expected {self.n_modules} module frames, got {len(modules)}")
        lead = modules[0].shape[:-2]
        for k, (m, p) in enumerate(zip(modules, self.placements, strict=True)):
            if m.shape[-2:] != (p.rows, p.cols) or m.shape[:-2] != lead:
                raise SourceError(f"module {k + 1} frame has shape {m.shape}; expected {lead + (p.rows, p.cols)}")
        if out is None:
            out = np.zeros(lead + self.frame_shape, dtype=np.result_type(*modules))
        else:
            out[...] = 0
        for m, p in zip(modules, self.placements, strict=True):
            rows, cols = self._flipped_slices(p)
            out[..., rows, cols] = m[..., ::-1, :]
        return out

    # -- the module buffer: every module's pixels side by side, never stitched (issue 11) ------------
    @property
    def module_starts(self) -> tuple[int, ...]:
        """Where each module's pixels begin in a module buffer (modules in order, each row-major)."""
        starts, at = [], 0
        for p in self.placements:
            starts.append(at)
            at += p.rows * p.cols
        return tuple(starts)

    @property
    def module_pixels(self) -> int:
        """Pixels of all modules together: the length of one frame in a module buffer."""
        return sum(p.rows * p.cols for p in self.placements)

    def module_views(self, buffer: np.ndarray) -> list[np.ndarray]:
        """Module frames ``(..., rows, cols)`` as views of a module buffer ``(..., module_pixels)``."""
        if buffer.shape[-1] != self.module_pixels:
            raise SourceError(
                f"module buffer holds {buffer.shape[-1]} pixels a frame; the layout has {self.module_pixels}"
            )
        lead = buffer.shape[:-1]
        return [
            buffer[..., start : start + p.rows * p.cols].reshape(*lead, p.rows, p.cols)
            for start, p in zip(self.module_starts, self.placements, strict=True)
        ]

    def stitch_buffer(self, buffer: np.ndarray) -> np.ndarray:
        """Stitch frames held in a module buffer ``(..., module_pixels)`` (the same rule as :meth:`stitch`)."""
        return self.stitch(self.module_views(buffer))

    def module_index(self) -> np.ndarray:
        """For each stitched pixel, the index of its pixel in a module buffer; -1 in the gaps.

        Computed with :meth:`stitch` itself, so the stitch an engine folds into its column indices is
        the one that stitches frames, flips included.
        """
        starts = self.module_starts
        numbered = [
            np.arange(start + 1, start + 1 + p.rows * p.cols, dtype=np.int64).reshape(p.rows, p.cols)
            for start, p in zip(starts, self.placements, strict=True)
        ]
        return self.stitch(numbered) - 1

    def gap_mask(self) -> np.ndarray:
        """True where no module has a pixel."""
        covered = self.stitch([np.ones((p.rows, p.cols), dtype=bool) for p in self.placements])
        return ~covered

    def stitch_mask(self, module_masks: list[np.ndarray | None]) -> np.ndarray:
        """Stitch per-module bad-pixel masks (None = none) and add the gaps."""
        parts = [
            np.zeros((p.rows, p.cols), bool) if m is None else np.asarray(m).reshape(p.rows, p.cols) != 0
            for m, p in zip(module_masks, self.placements, strict=True)
        ]
        return self.stitch(parts) | self.gap_mask()
