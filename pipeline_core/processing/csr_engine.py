"""Integration as one sparse matrix-vector product per frame, with pyFAI's own CSR coefficients (issue 11).

pyFAI's ``integrate1d`` for a csr method (weighted average, no dark/flat) computes, per bin b,
``I_b = Σ_j c_bj·x_j / Σ_j c_bj·ω_j`` over the valid pixels j, where c is the CSR matrix it built
for the geometry, mask, bins and unit, x the counts and ω = solid angle × polarization; with the
poisson error model ``σ_b = sqrt(Σ_j c_bj²·max(x_j, 1)) / Σ_j c_bj·ω_j``; bins without a valid
pixel get pyFAI's ``empty`` value (``pyFAI/engines/CSR_engine.py`` writes it out in Python, the
Cython engine does the same in one pass). On its way it makes several full-frame passes (float
conversion, a 4-column preprocessing array, the corrections), moving ~250 MB per Lambda 2M frame.

Here the denominator does not depend on the frame, so it is summed once per bin; a frame costs one
``scipy.sparse`` product over the raw counts (the matrix alone is what moves), plus a second one on
the variance for poisson. The coefficients are pyFAI's (built by pyFAI, :mod:`.engine_build`),
so the result is pyFAI's up to float32 summation order (measured ≤ 3e-6 of the pattern maximum).

* **The stitch is folded into the column indices**: for a layout (:class:`~.stitch.StitchLayout`)
  each stitched pixel's column becomes the index of its pixel in the module buffer
  (:mod:`.module_frames`), so frames are integrated straight from the decoded module frames
  (uint16/int16/uint32), flips and offsets included, and never stitched. Columns of pixels no module
  has (gaps not masked: pyFAI integrates them as zeros) still count in the denominators.
* **Invalid pixels** (negative or NaN counts) are left out of their frame only, as pyFAI's dummy
  does: zero in the product, and that frame's denominator is recomputed without them (a second
  product, only for frames that have them).
* **Threads**: the matrices are read-only and scratch buffers are per thread, so one engine serves
  every worker; scipy releases the GIL during the product.
* **Frames in blocks, columns in slabs** (issue 21): a product gathers its frame's counts from
  everywhere in a 10 MB vector, and streams the whole matrix (~50 MB for a Lambda 2M) for one frame.
  So the columns are cut into slabs of ``SLAB_COLUMNS`` (each slab's share of the matrix kept as its
  own CSR), and :meth:`CsrEngine.integrate_block` converts k frames at a time, slab by slab, into a
  (slab columns × k) float32 block (the float conversion each frame needed anyway, written
  transposed) that stays in the CPU's caches while one ``csr @ dense`` product reads the slab's
  matrix once for k frames. Per bin the slabs' partial sums (float32, as before) are added in
  float64. One frame alone takes the same path with k = 1, so a block's patterns are bit-identical to
  frame-by-frame ones whatever k is; k is chosen by measurement (:mod:`.block_size`). Poisson needs a
  second product per slab on max(counts, 1) with the squared coefficients, made in the same slab pass.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import csr_matrix

from .block_size import BlockSize
from .stitch import StitchLayout

if TYPE_CHECKING:
    from .engine_build import BuiltEngine


#: Columns of one slab: its float32 block (SLAB_COLUMNS × k) stays in the CPU's caches while the
#: product gathers from it (measured: one Lambda 2M frame 15.7 ms over all columns at once, 6.5 ms
#: in slabs of 2**19 columns, 5.6-6.6 ms in blocks of 8 frames).
SLAB_COLUMNS = 1 << 18
#: Most frames in one block: the block buffer is SLAB_COLUMNS × k float32 per thread (16 MB).
MAX_BLOCK = 16


@dataclass(frozen=True)
class _Slab:
    """The matrix entries of one range of columns ``[start, stop)``, column indices relative to ``start``."""

    start: int
    stop: int
    matrix: csr_matrix  # (bins, stop - start) float32: pyFAI's coefficients
    squared: csr_matrix | None  # the coefficients squared, for the poisson variance


@dataclass(frozen=True)
class _Columns:
    """The matrices for one column space: a stitched frame, or the module buffer of one layout."""

    size: int
    slabs: tuple[_Slab, ...]
    omega: np.ndarray  # (columns,) float32: ω of each column's pixel, 0 where it is never integrated
    norm_rest: np.ndarray | float  # Σ c·ω of matrix entries on pixels without a column here (gaps)
    var_rest: np.ndarray | float  # Σ c² of those (a zero count has poisson variance 1)

    @property
    def nbytes(self) -> int:
        arrays = [self.omega] + [a for s in self.slabs for a in (s.matrix.data, s.matrix.indices, s.matrix.indptr)]
        arrays += [s.squared.data for s in self.slabs if s.squared is not None]
        return sum(int(a.nbytes) for a in arrays)


class CsrEngine:
    """pyFAI's CSR matrix applied as a scipy sparse product; see the module docstring for the arithmetic."""

    def __init__(self, built: BuiltEngine, frame_shape: tuple[int, int], poisson: bool):
        rows, cols = frame_shape
        size = rows * cols
        if built.image_size != size:
            raise ValueError(f"pyFAI's engine was built for {built.image_size} pixels, the frames have {size}")
        if not built.weighted_average:
            raise ValueError("the csr engine reproduces pyFAI's weighted average only")
        self.frame_shape = (rows, cols)
        self.poisson = poisson
        self.empty = float(built.empty)
        data = np.asarray(built.data, dtype=np.float32)
        indices = np.asarray(built.indices)
        indptr = np.asarray(built.indptr)
        self.bins = len(indptr) - 1
        omega = np.ones(size, np.float64)
        for correction in (built.solidangle, built.polarization):
            if correction is not None:
                omega *= np.asarray(correction, dtype=np.float64).ravel()
        # what pyFAI never integrates: its mask, and pixels whose normalisation is 0 or not finite
        never = ~np.isfinite(omega) | (omega == 0)
        if built.cmask is not None and built.check_mask:
            never |= np.asarray(built.cmask).ravel() != 0
        omega[never] = 0.0
        if never[indices].any():
            data, indices, indptr = _select(data, indices, indptr, ~never[indices])
        self._omega = omega.astype(np.float32)
        #: Σ c·ω per bin over every pixel pyFAI integrates (float64, like pyFAI's accumulators)
        self.norm = _product_f64(data, indices, indptr, omega)
        self._data, self._indices, self._indptr = data, indices, indptr
        self._stitched: _Columns | None = None  # built on first use: Lambda frames never need it
        self._layouts: dict[StitchLayout, _Columns] = {}
        self._lock = threading.Lock()
        self._scratch = threading.local()
        #: frames per product, chosen by timing the first blocks (shared by the worker threads)
        self.block = BlockSize(limit=MAX_BLOCK)

    @property
    def nbytes(self) -> int:
        """Bytes held by the matrices (for memory reports)."""
        held = [self._data, self._indices, self._indptr, self._omega, self.norm]
        spaces = list(self._layouts.values()) + ([self._stitched] if self._stitched is not None else [])
        return sum(int(a.nbytes) for a in held) + sum(c.nbytes for c in spaces)

    # -- integration ---------------------------------------------------------------------------
    def integrate(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        """One stitched frame: (intensity, sigma or None, invalid pixels left out)."""
        return self._one(self.stitched_columns(), np.ravel(frame))

    def integrate_modules(self, row: np.ndarray, layout: StitchLayout) -> tuple[np.ndarray, np.ndarray | None, int]:
        """One frame as its modules wrote it (a module-buffer row of ``layout``), never stitched."""
        return self._one(self.columns_for(layout), row)

    def _one(self, cols: _Columns, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        values = values.reshape(1, -1)
        if values.shape[1] != cols.size:
            raise ValueError(f"frame of {values.shape[1]} pixels; the engine's columns are {cols.size}")
        out = self._result(1)
        self._block(cols, values, out, 0)
        return out.intensity[0], None if out.sigma is None else out.sigma[0], int(out.invalid[0])

    def _result(self, n: int) -> _BlockResult:
        sigma = np.empty((n, self.bins), np.float32) if self.poisson else None
        return _BlockResult(np.empty((n, self.bins), np.float32), sigma, np.zeros(n, np.int64))

    def integrate_block(self, values: np.ndarray, layout: StitchLayout | None = None) -> _BlockResult:
        """Frames ``values`` (n, columns): module-buffer rows of ``layout``, or stitched frames
        (``layout`` None, each frame flattened), k at a time (:attr:`block`); bit-identical to
        :meth:`integrate_modules` / :meth:`integrate` frame by frame."""
        cols = self.stitched_columns() if layout is None else self.columns_for(layout)
        values = values.reshape(len(values), -1)
        if values.shape[1] != cols.size:
            raise ValueError(f"frames of {values.shape[1]} pixels; the engine's columns are {cols.size}")
        n = len(values)
        out = self._result(n)
        start = 0
        while start < n:
            k = self.block.next(n - start)
            t0 = _thread_s()
            self._block(cols, values[start : start + k], out, start)
            self.block.record(k, _thread_s() - t0)
            start += k
        return out

    def _block(self, cols: _Columns, values: np.ndarray, out: _BlockResult, start: int) -> None:
        """Frames ``values`` (k, columns) into rows ``start:start + k`` of ``out``: slab by slab, each
        slab's counts converted to float32 in the (columns × k) layout of the product."""
        k = len(values)
        bad = _invalid_rows(values)
        signal = np.zeros((self.bins, k), np.float64)
        variance = np.zeros((self.bins, k), np.float64) if self.poisson else None
        buf = self._block_buffer(min(cols.size, SLAB_COLUMNS) * k)
        for slab in cols.slabs:
            x = buf[: (slab.stop - slab.start) * k].reshape(-1, k)
            _fill(x, values[:, slab.start : slab.stop])
            _zero(x, bad, slab)
            signal += slab.matrix @ x
            if variance is not None:
                assert slab.squared is not None
                np.maximum(x, np.float32(1), out=x)  # poisson: a count below 1 has variance 1
                _zero(x, bad, slab)
                variance += slab.squared @ x
        for i, b in enumerate(bad):
            norm = self.norm if b is None else cols.norm_rest + self._norm_without(cols, b)
            if b is not None:
                out.invalid[start + i] = int(np.count_nonzero(b))
            empty = norm == 0
            safe = np.where(empty, 1.0, norm)
            intensity = (signal[:, i] / safe).astype(np.float32)
            intensity[empty] = self.empty
            out.intensity[start + i] = intensity
            if variance is not None and out.sigma is not None:
                sigma = (np.sqrt(variance[:, i] + cols.var_rest) / safe).astype(np.float32)
                sigma[empty] = self.empty
                out.sigma[start + i] = sigma

    @staticmethod
    def _norm_without(cols: _Columns, bad: np.ndarray) -> np.ndarray:
        """Σ c·ω per bin over the columns of a frame whose ``bad`` pixels are left out."""
        omega = np.where(bad, np.float32(0), cols.omega)
        return sum((s.matrix @ omega[s.start : s.stop] for s in cols.slabs), np.zeros(1, np.float64))

    def _block_buffer(self, size: int) -> np.ndarray:
        """This thread's float32 block buffer (the engine is shared by worker threads), grown as needed."""
        buf = getattr(self._scratch, "block", None)
        if buf is None or buf.size < size:
            buf = self._scratch.block = np.empty(size, np.float32)
        return buf

    # -- column spaces ---------------------------------------------------------------------------
    def stitched_columns(self) -> _Columns:
        """The matrices over a stitched frame's pixels (built on first use)."""
        with self._lock:
            if self._stitched is None:
                self._stitched = self._columns(self._indices, self._indptr, self._data, self.frame_shape[0] *
                                               self.frame_shape[1], self._omega, 0.0, 0.0)  # fmt: skip
            return self._stitched

    def columns_for(self, layout: StitchLayout) -> _Columns:
        """The matrices over ``layout``'s module buffer (built once per layout, then cached)."""
        with self._lock:
            found = self._layouts.get(layout)
            if found is None:
                if layout.frame_shape != self.frame_shape:
                    raise ValueError(
                        f"layout stitches {layout.frame_shape} frames; the engine's are {self.frame_shape}"
                    )
                found = self._layouts[layout] = self._fold(layout)
            return found

    def _fold(self, layout: StitchLayout) -> _Columns:
        # stitched pixel -> module-buffer pixel, -1 in gaps (int32: fewer than 2**31 pixels, half the memory)
        index = layout.module_index().ravel().astype(np.int32)
        moved = index[self._indices]
        inside = moved >= 0
        has_pixel = index >= 0
        omega = np.zeros(layout.module_pixels, np.float32)
        omega[index[has_pixel]] = self._omega[has_pixel]
        data, indptr = self._data, self._indptr
        norm_rest: np.ndarray | float = 0.0
        var_rest: np.ndarray | float = 0.0
        if not inside.all():  # unmasked gaps: pyFAI integrates their zeros, so they weigh in the denominators
            rows = np.repeat(np.arange(self.bins), np.diff(indptr))[~inside]
            outside = data[~inside].astype(np.float64)
            norm_rest = np.bincount(rows, outside * self._omega[self._indices[~inside]], minlength=self.bins)
            var_rest = np.bincount(rows, outside**2, minlength=self.bins)
            data, _, indptr = _select(data, self._indices, indptr, inside)
        indices = moved if inside.all() else moved[inside]
        return self._columns(indices, indptr, data, layout.module_pixels, omega, norm_rest, var_rest)

    def _columns(self, indices, indptr, data, size, omega, norm_rest, var_rest) -> _Columns:
        """The column space cut into slabs of SLAB_COLUMNS columns, each slab's entries in their order
        in pyFAI's matrix (one selection per slab: no full-size copy of the matrix at any time)."""
        filled = np.flatnonzero(np.diff(indptr))  # rows with entries: each one's range ends where the next begins
        slabs = []
        for start in range(0, size, SLAB_COLUMNS):
            stop = min(size, start + SLAB_COLUMNS)
            keep = indices >= start
            keep &= indices < stop
            counts = _row_counts(keep, indptr, filled, self.bins)
            part_indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
            part_data = data[keep]
            shape = (self.bins, stop - start)
            part_indices = (indices[keep] - start).astype(np.int32, copy=False)
            matrix = csr_matrix((part_data, part_indices, part_indptr), shape=shape)
            # c² of a float32 c is exact in float64, so squaring in float32 rounds it once, as a cast would
            sq = csr_matrix((np.square(part_data), matrix.indices, matrix.indptr), shape=shape) if self.poisson \
                else None  # fmt: skip
            slabs.append(_Slab(start, stop, matrix, sq))
        return _Columns(size, tuple(slabs), omega, norm_rest, var_rest)


@dataclass
class _BlockResult:
    """Patterns of a block of frames: (n, bins) intensities, sigma or None, invalid pixels per frame."""

    intensity: np.ndarray
    sigma: np.ndarray | None
    invalid: np.ndarray


def _thread_s() -> float:
    """CPU seconds of this thread: the block-size probe times its own products, not the other workers'."""
    return time.thread_time()


def _product_f64(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``matrix @ vector`` summed in float64, a block of rows at a time (no float64 copy of the whole matrix)."""
    bins = len(indptr) - 1
    out = np.zeros(bins, np.float64)
    step = max(1, int(bins * (1 << 20) / max(1, len(data))))  # ~1 M entries a block
    for r0 in range(0, bins, step):
        r1 = min(bins, r0 + step)
        a, b = int(indptr[r0]), int(indptr[r1])
        block = csr_matrix((data[a:b].astype(np.float64), indices[a:b], indptr[r0 : r1 + 1] - a),
                           shape=(r1 - r0, vector.size))  # fmt: skip
        out[r0:r1] = block @ vector
    return out


def _select(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, keep: np.ndarray):
    """The CSR entries where ``keep`` is true, order within each row kept (so sums add up alike)."""
    bins = len(indptr) - 1
    rows = np.repeat(np.arange(bins), np.diff(indptr))
    counts = np.bincount(rows[keep], minlength=bins)
    new_indptr = np.concatenate(([0], np.cumsum(counts))).astype(indptr.dtype)
    return data[keep], indices[keep], new_indptr


def _row_counts(keep: np.ndarray, indptr: np.ndarray, filled: np.ndarray, bins: int) -> np.ndarray:
    """Entries kept per row, summed 256 rows at a time: ``reduceat`` converts what it sums to its
    dtype, and a full-size int64 copy of ``keep`` would be the largest array of the engine's build."""
    counts = np.zeros(bins, np.int64)
    for r in range(0, len(filled), 256):
        rows = filled[r : r + 256]
        a, b = int(indptr[rows[0]]), int(indptr[rows[-1] + 1])
        counts[rows] = np.add.reduceat(keep[a:b], indptr[rows] - a, dtype=np.int64)
    return counts


def _fill(x: np.ndarray, values: np.ndarray) -> None:
    """``x`` (columns × k) float32 from ``values`` (k × columns): pyFAI integrates float32 counts too.
    Frame by frame (a strided write over a long contiguous read) up to 8 frames; numpy's own transposed
    copy iterates over k in its inner loop, measured 4x slower at k = 2 and faster from k = 16."""
    k = len(values)
    if k >= 16:
        np.copyto(x, values.T, casting="unsafe")
        return
    for i in range(k):
        x[:, i] = values[i]


def _zero(x: np.ndarray, bad: list[np.ndarray | None], slab: _Slab) -> None:
    """Zero the invalid pixels of each frame (column i of the slab's block ``x``)."""
    for i, b in enumerate(bad):
        if b is not None:
            x[b[slab.start : slab.stop], i] = 0.0


def _invalid_rows(values: np.ndarray) -> list[np.ndarray | None]:
    """:func:`_invalid` of each frame (row) of a block; unsigned counts cost nothing, signed one
    minimum over the block."""
    kind = values.dtype.kind
    if kind in "ub":
        return [None] * len(values)
    if kind == "i":
        lows = values.min(axis=1)
        return [row < 0 if low < 0 else None for row, low in zip(values, lows, strict=True)]
    return [_invalid(row, row.astype(np.float32, copy=False)) for row in values]


def _invalid(values: np.ndarray, as_float32: np.ndarray) -> np.ndarray | None:
    """Pixels without a valid count (negative, NaN, inf), or None when all are valid.

    Unsigned counts cannot be invalid and cost nothing; signed ones one pass (a minimum). Floats are
    judged as float32, the precision pyFAI integrates in (a float64 count beyond float32's range is
    infinite there, and pyFAI leaves it out).
    """
    kind = values.dtype.kind
    if kind in "ub":
        return None
    if kind == "i":
        return values < 0 if values.min() < 0 else None
    bad = ~np.isfinite(as_float32) | (as_float32 < 0)
    return bad if bad.any() else None
