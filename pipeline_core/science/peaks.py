"""Peak positions of many reflections in many frames at once: a vectorised Gaussian fit.

Each (frame, reflection) pair has its own window of ``2 w + 1`` bins; all windows are gathered into
one array and fitted together by Levenberg–Marquardt on ``A exp(-(t-μ)²/2σ²) + b0 + b1 t`` (a
Gaussian on a linear background), in bin coordinates so every problem is equally well conditioned.
There is no Python loop over frames: each iteration is a handful of numpy operations on the whole
stack. Uncertainties are the usual least-squares ones, ``cov = (JᵀJ)⁻¹ · χ²/(m - 5)``, so they follow
the scatter actually seen in the window (the rows' own errors are used as weights when given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: why a peak was not taken, by code (0 = fitted)
FIT_PROBLEMS = {
    1: "no peak above the noise",
    2: "peak at the edge of its window (moved too far, or a neighbour)",
    3: "peak width out of range",
    4: "outside the radial range",
}


MIN_FIT_BINS = 6


@dataclass(frozen=True)
class FitSettings:
    """Window sizes in radial bins, and what a peak must be to count."""

    #: half-width of the window searched for the peak's maximum around the predicted position (at
    #: least 3 FWHM of the peaks seen in the batch before)
    search_bins: int = 32
    #: half-width of the window fitted; None: 1.3 FWHM + 2 of the batch's peaks (±3 σ and some background)
    fit_bins: int | None = None
    iterations: int = 12
    #: amplitude / its uncertainty below which there is "no peak"
    min_significance: float = 5.0

    def __post_init__(self) -> None:
        fit_ok = self.fit_bins is None or 4 <= self.fit_bins <= 500
        if not (fit_ok and 1 <= self.search_bins <= 2000 and 1 <= self.iterations <= 200):
            raise ValueError(f"fit settings {self} out of range (fit_bins 4..500, search_bins 1..2000)")

    def fit_half_width(self, fwhm_bins: float) -> int:
        """The fit window's half-width for peaks ``fwhm_bins`` wide (FWHM, in bins)."""
        if self.fit_bins is not None:
            return self.fit_bins
        return int(np.clip(np.ceil(1.3 * fwhm_bins) + 2, MIN_FIT_BINS, 500))


@dataclass(frozen=True)
class PeakFits:
    """Fitted positions in fractional bin index (n frames, r reflections), their σ, and a problem code."""

    index: np.ndarray
    sigma: np.ndarray
    problem: np.ndarray
    #: fitted Gaussian σ in bins (a peak another overlaps fits wider than its neighbours)
    width: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.problem == 0


def _gather(rows: np.ndarray, centre: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, r, 2 half + 1) of ``rows`` around integer ``centre`` (n, r); and whether each fits."""
    bins = rows.shape[1]
    offsets = np.arange(-half, half + 1)
    idx = centre[..., None] + offsets
    inside = (centre - half >= 0) & (centre + half < bins)
    np.clip(idx, 0, bins - 1, out=idx)
    return rows[np.arange(rows.shape[0])[:, None, None], idx], inside


def search_maxima(rows: np.ndarray, predicted: np.ndarray, half: int) -> tuple[np.ndarray, float]:
    """Index (n, r) of the highest bin within ``half`` bins of each predicted index, and the peaks'
    typical FWHM in bins (median over the batch of the bins above half height). NaN where predicted
    is NaN, or where the highest bin is the window's first or last: that is a flank of a peak outside
    the window (the ramp moved further than the window reaches), and a fit centred there would slide
    a Gaussian along the flank to a wrong position rather than find no peak."""
    bad = ~np.isfinite(predicted)
    centre = np.rint(np.where(bad, 0, predicted)).astype(np.intp)
    windows, _ = _gather(rows, centre, half)
    windows = np.where(np.isfinite(windows), windows, -np.inf)
    top = np.argmax(windows, axis=-1)
    bad |= (top == 0) | (top == 2 * half)
    found = np.where(bad, np.nan, centre + top - half)
    around, _ = _gather(rows, np.clip(np.where(bad, 0, centre + top - half), 0, rows.shape[1] - 1), half)
    low = np.nanmin(np.where(np.isfinite(around), around, np.nan), axis=-1, keepdims=True)
    high = around[..., half : half + 1]
    above = (around > 0.5 * (low + high)).sum(axis=-1).astype(np.float64)
    fwhm = float(np.nanmedian(np.where(bad, np.nan, above))) if not bad.all() else np.nan
    return found, fwhm


def fit_peaks(
    rows: np.ndarray,
    centre: np.ndarray,
    settings: FitSettings,
    errors: np.ndarray | None = None,
    fwhm_bins: float = 8.0,
) -> PeakFits:
    """Fit one Gaussian + line in a window around each ``centre`` (n, r) bin index (NaN: not fitted)."""
    w = settings.fit_half_width(fwhm_bins)
    bad = ~np.isfinite(centre)
    c = np.rint(np.where(bad, 0, centre)).astype(np.intp)
    y, inside = _gather(rows.astype(np.float64, copy=False), c, w)
    n, r, m = y.shape
    y = y.reshape(n * r, m)
    weight = np.ones_like(y)
    if errors is not None:
        e, _ = _gather(errors.astype(np.float64, copy=False), c, w)
        e = e.reshape(n * r, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.where(e > 0, 1.0 / e, 0.0)
    finite = np.isfinite(y).all(axis=1)
    y = np.where(np.isfinite(y), y, 0.0)
    p = _initial(y, w)
    if errors is None:  # counts: variance grows with the signal; weights from a first, unweighted fit
        half = max(2, settings.iterations // 2)
        p, _, _ = _levenberg_marquardt(y, weight, p, w, half)
        f, _ = _model(p, np.arange(-w, w + 1, dtype=np.float64))
        floor = np.maximum(1e-3 * np.abs(f).max(axis=1, keepdims=True), 1e-12)
        weight = 1.0 / np.sqrt(np.maximum(f, floor))
        p, cov, _ = _levenberg_marquardt(y, weight, p, w, settings.iterations - half)
    else:
        p, cov, _ = _levenberg_marquardt(y, weight, p, w, settings.iterations)
    amp, mu, width = p[:, 0], p[:, 1], p[:, 2]
    with np.errstate(invalid="ignore"):
        s_amp, s_mu = np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])
        problem = np.zeros(n * r, np.int8)
        problem[~((amp > 0) & (amp > settings.min_significance * s_amp) & np.isfinite(s_mu))] = 1
        problem[(problem == 0) & ~((width > 0.3) & (width < w / 1.5))] = 3
        problem[(problem == 0) & ~(np.abs(mu) < w - 2)] = 2
    problem[~finite] = 1
    problem = problem.reshape(n, r)
    problem[~inside] = 4
    problem[bad] = 4
    index = np.where(problem == 0, c + mu.reshape(n, r), np.nan)
    ok = problem == 0
    return PeakFits(index, np.where(ok, s_mu.reshape(n, r), np.nan), problem, np.where(ok, width.reshape(n, r), np.nan))


def _initial(y: np.ndarray, w: int) -> np.ndarray:
    """Starting values: background through the window's ends, peak at its highest bin near the middle."""
    t = np.arange(-w, w + 1, dtype=np.float64)
    left, right = y[:, :2].mean(axis=1), y[:, -2:].mean(axis=1)
    b0, b1 = 0.5 * (left + right), (right - left) / (t[-1] - t[0] + 1.0)
    net = y - (b0[:, None] + b1[:, None] * t)
    middle = slice(w // 2, w + w // 2 + 1)
    k = np.argmax(net[:, middle], axis=1) + w // 2
    amp = np.maximum(net[np.arange(len(y)), k], 1e-12)
    area = np.clip(net, 0, None).sum(axis=1)
    width = np.clip(area / (amp * np.sqrt(2 * np.pi)), 0.7, w / 3)
    return np.stack([amp, t[k], width, b0, b1], axis=1)


def _model(p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model values (N, m) and Jacobian (N, m, 5) at parameters ``p`` (N, 5)."""
    amp, mu, width = p[:, :1], p[:, 1:2], p[:, 2:3]
    u = (t - mu) / width
    g = np.exp(-0.5 * u * u)
    ag = amp * g
    f = ag + p[:, 3:4] + p[:, 4:5] * t
    jac = np.stack([g, ag * u / width, ag * u * u / width, np.ones_like(g), np.broadcast_to(t, g.shape)], axis=-1)
    return f, jac


def _levenberg_marquardt(
    y: np.ndarray, weight: np.ndarray, p: np.ndarray, w: int, iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed number of damped Gauss–Newton steps, each problem with its own damping; returns
    parameters, covariance (scaled by the reduced χ²) and χ²."""
    t = np.arange(-w, w + 1, dtype=np.float64)
    lam = np.full(len(y), 1e-3)
    eye = np.eye(5)
    f, jac = _model(p, t)
    res = (y - f) * weight
    chi2 = np.einsum("nm,nm->n", res, res)
    for _ in range(iterations):
        jw = jac * weight[..., None]
        jwt = jw.transpose(0, 2, 1)
        h = jwt @ jw  # batched BLAS: faster than einsum for (N, 5, m) @ (N, m, 5)
        g = (jwt @ res[..., None])[..., 0]
        damped = h + lam[:, None, None] * (h * eye + 1e-12 * eye)
        try:
            step = np.linalg.solve(damped, g[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(damped.reshape(-1, 5), g.reshape(-1), rcond=None)[0].reshape(g.shape)
        trial = p + step
        trial[:, 2] = np.clip(trial[:, 2], 0.05, 4.0 * w)
        f_t, jac_t = _model(trial, t)
        res_t = (y - f_t) * weight
        chi2_t = np.einsum("nm,nm->n", res_t, res_t)
        better = chi2_t < chi2
        p = np.where(better[:, None], trial, p)
        res = np.where(better[:, None], res_t, res)
        jac = np.where(better[:, None, None], jac_t, jac)
        chi2 = np.where(better, chi2_t, chi2)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    jw = jac * weight[..., None]
    h = jw.transpose(0, 2, 1) @ jw
    dof = max(1, y.shape[1] - 5)
    with np.errstate(invalid="ignore", divide="ignore"):
        cov = _safe_inverse(h) * (chi2 / dof)[:, None, None]
    return p, cov, chi2


def _safe_inverse(h: np.ndarray) -> np.ndarray:
    """Inverse of each 5×5 matrix; NaN for a singular one (its peak is then 'not found')."""
    out = np.full_like(h, np.nan)
    ok = np.isfinite(h).all(axis=(1, 2)) & (np.abs(np.linalg.det(h)) > 1e-300)
    if ok.any():
        out[ok] = np.linalg.inv(h[ok])
    return out
