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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.sparse import csr_matrix

from .stitch import StitchLayout

if TYPE_CHECKING:
    from .engine_build import BuiltEngine


@dataclass(frozen=True)
class _Columns:
    """The matrices for one column space: a stitched frame, or the module buffer of one layout."""

    matrix: csr_matrix  # (bins, columns) float32: pyFAI's coefficients
    squared: csr_matrix | None  # the coefficients squared, for the poisson variance
    omega: np.ndarray  # (columns,) float32: ω of each column's pixel, 0 where it is never integrated
    norm_rest: np.ndarray | float  # Σ c·ω of matrix entries on pixels without a column here (gaps)
    var_rest: np.ndarray | float  # Σ c² of those (a zero count has poisson variance 1)

    @property
    def size(self) -> int:
        return int(self.matrix.shape[1])


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
        # c² of a float32 c is exact in float64, so squaring in float32 rounds it once, as a cast would
        self._squared_data = np.square(data) if poisson else None
        self._stitched = self._columns(indices, indptr, data, self._squared_data, size, self._omega, 0.0, 0.0)
        self._layouts: dict[StitchLayout, _Columns] = {}
        self._lock = threading.Lock()
        self._scratch = threading.local()

    @property
    def nbytes(self) -> int:
        """Bytes held by the matrices (for memory reports)."""
        held = [self._data, self._indices, self._indptr, self._omega, self.norm]
        if self._squared_data is not None:
            held.append(self._squared_data)
        for c in self._layouts.values():
            held += [c.matrix.indices, c.omega]
        return sum(int(a.nbytes) for a in held)

    # -- integration ---------------------------------------------------------------------------
    def integrate(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        """One stitched frame: (intensity, sigma or None, invalid pixels left out)."""
        return self._run(self._stitched, np.ravel(frame))

    def integrate_modules(self, row: np.ndarray, layout: StitchLayout) -> tuple[np.ndarray, np.ndarray | None, int]:
        """One frame as its modules wrote it (a module-buffer row of ``layout``), never stitched."""
        return self._run(self.columns_for(layout), row)

    def _run(self, cols: _Columns, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, int]:
        if values.size != cols.size:
            raise ValueError(f"frame of {values.size} pixels; the engine's columns are {cols.size}")
        x = self._buffer(cols.size, 0)
        np.copyto(x, values, casting="unsafe")  # pyFAI integrates float32 counts too
        bad = _invalid(values, x)
        n_bad = 0
        if bad is not None:
            n_bad = int(np.count_nonzero(bad))
            x[bad] = 0.0
        signal = cols.matrix @ x
        if bad is None:
            norm = self.norm
        else:  # this frame's denominator without its invalid pixels
            norm = cols.norm_rest + cols.matrix @ np.where(bad, np.float32(0), cols.omega)
        empty = norm == 0
        safe = np.where(empty, 1.0, norm)
        intensity = (signal / safe).astype(np.float32)
        intensity[empty] = self.empty
        sigma = None
        if self.poisson:
            assert cols.squared is not None
            v = self._buffer(cols.size, 1)
            np.maximum(x, np.float32(1), out=v)
            if bad is not None:
                v[bad] = 0.0
            variance = cols.squared @ v + cols.var_rest
            sigma = (np.sqrt(variance) / safe).astype(np.float32)
            sigma[empty] = self.empty
        return intensity, sigma, n_bad

    def _buffer(self, size: int, slot: int) -> np.ndarray:
        """A float32 scratch vector of this thread (the engine is shared by worker threads)."""
        buffers = getattr(self._scratch, "buffers", None)
        if buffers is None:
            buffers = self._scratch.buffers = {}
        key = (size, slot)
        buf = buffers.get(key)
        if buf is None:
            buf = buffers[key] = np.empty(size, np.float32)
        return buf

    # -- column spaces ---------------------------------------------------------------------------
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
        data, squared, indptr = self._data, self._squared_data, self._indptr
        norm_rest: np.ndarray | float = 0.0
        var_rest: np.ndarray | float = 0.0
        if not inside.all():  # unmasked gaps: pyFAI integrates their zeros, so they weigh in the denominators
            rows = np.repeat(np.arange(self.bins), np.diff(indptr))[~inside]
            outside = data[~inside].astype(np.float64)
            norm_rest = np.bincount(rows, outside * self._omega[self._indices[~inside]], minlength=self.bins)
            var_rest = np.bincount(rows, outside**2, minlength=self.bins)
            data, _, indptr = _select(data, self._indices, indptr, inside)
            squared = None if squared is None else squared[inside]
        indices = moved if inside.all() else moved[inside]
        return self._columns(indices, indptr, data, squared, layout.module_pixels, omega, norm_rest, var_rest)

    def _columns(self, indices, indptr, data, squared, size, omega, norm_rest, var_rest) -> _Columns:
        shape = (self.bins, size)
        matrix = csr_matrix((data, indices, indptr), shape=shape)
        sq = None if squared is None else csr_matrix((squared, indices, indptr), shape=shape)
        return _Columns(matrix, sq, omega, norm_rest, var_rest)


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
