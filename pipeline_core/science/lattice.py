"""One lattice ratio per frame from its reflections, weighted by their uncertainties.

A reflection a sample peak overlaps is pulled off its place: it then disagrees with the others by
more than its uncertainty allows. Each round, every reflection is compared with the weighted mean
of the *others* (leave-one-out, so the culprit cannot hide in the mean it spoils); the worst one
beyond ``reject_sigma`` is left out, until the rest agree. Two reflections that disagree cannot
say which one is wrong: the frame gets NaN and says so, rather than a guess; nor can a majority that
outvotes a reflection much more precise than itself (overlapped peaks fit broad and uncertain, and
a sample phase whose lines mimic the marker's overlaps several at once). Nor can one reflection
alone when others were expected in the radial range: nothing checks that the peak fitted is that
reflection and not a neighbour (on a fast ramp, a window centred too far off puts gold 222 on gold
311, 4.4 % away in d: 60 GPa read as 14), so the frame gets NaN unless only one was asked for or only
one is inside the radial range. Everything stays in
arrays (codes, not text); :mod:`.series` turns codes into the words users read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: relative floor on each ratio's σ when comparing reflections (fits of clean data can claim 1e-7;
#: 1e-5 in d is ~0.005 GPa for gold at ambient): only the rejection test uses it
SIGMA_FLOOR = 1e-5
#: left-out code of a reflection that disagreed with the others (1-4: :data:`peaks.FIT_PROBLEMS`)
OUTLIER = 5
#: frame codes: why a frame has no value
FRAME_OK, FRAME_NOTHING_FITTED, FRAME_PAIR_DISAGREES, FRAME_PRECISE_OUTVOTED, FRAME_UNCHECKED = 0, 1, 2, 3, 4
#: the fit's code of a reflection outside the radial range (:data:`peaks.FIT_PROBLEMS`)
OUTSIDE_RANGE = 4
#: a reflection whose σ is below this fraction of the σ of the others' mean is never outvoted
AMBIGUOUS_PRECISION = 0.5


@dataclass(frozen=True)
class LatticeRatios:
    """Per frame: the ratio s = a/a0 and its σ; per reflection why it was left out (0 = used)."""

    ratio: np.ndarray
    sigma: np.ndarray
    #: (n, r) int8: 0 used, 1-4 fit problem, 5 outlier
    left_out: np.ndarray
    #: (n, r) how far an outlier was, in sigma (0 elsewhere)
    outlier_sigma: np.ndarray
    #: (n,) 0 fine, 1 nothing fitted, 2 a pair disagrees, 3 the most precise outvoted, 4 one of several
    frame_problem: np.ndarray


def combine(ratio: np.ndarray, sigma: np.ndarray, problem: np.ndarray, reject_sigma: float = 3.0) -> LatticeRatios:
    """Combine per-reflection ratios (n, r) with σ (n, r); ``problem`` (n, r) is the fit's code (0 =
    fitted). Vectorised over frames; the loop runs over reflections only."""
    n, r = ratio.shape
    left = problem.astype(np.int8).copy()
    left[(left == 0) & ~(np.isfinite(ratio) & np.isfinite(sigma) & (sigma > 0))] = 1
    used = left == 0
    s_raw = np.where(used, sigma, 1.0)
    s_eff = np.maximum(s_raw, SIGMA_FLOOR)
    val = np.where(used, ratio, 0.0)
    how_far = np.zeros((n, r))
    disagree = np.zeros(n, bool)
    rows = np.arange(n)
    for _ in range(max(0, r - 1)):
        w = np.where(used, 1.0 / s_eff**2, 0.0)
        others_w = w.sum(axis=1, keepdims=True) - w
        with np.errstate(invalid="ignore", divide="ignore"):
            others_mean = ((w * val).sum(axis=1, keepdims=True) - w * val) / others_w
            z = np.abs(val - others_mean) / np.sqrt(s_eff**2 + 1.0 / others_w)
        z = np.where(used & (others_w > 0), z, 0.0)
        worst = np.argmax(z, axis=1)
        z_worst = z[rows, worst]
        count = used.sum(axis=1)
        beyond = z_worst > reject_sigma
        # outvoted but much more precise than those outvoting it: they may be the overlapped ones
        # (a sample phase whose lines mimic the marker's), so no majority decides
        with np.errstate(invalid="ignore", divide="ignore"):  # the fits' own σ here, not floored
            w_raw = np.where(used, 1.0 / np.maximum(s_raw, 1e-15) ** 2, 0.0)
            others_raw = w_raw.sum(axis=1) - w_raw[rows, worst]
            precise = s_raw[rows, worst] < AMBIGUOUS_PRECISION / np.sqrt(others_raw)
        disagree |= beyond & ((count == 2) | precise)
        drop = beyond & (count >= 3) & ~precise & ~disagree
        if not drop.any():
            break
        used[drop, worst[drop]] = False
        left[drop, worst[drop]] = OUTLIER
        how_far[drop, worst[drop]] = z_worst[drop]
    w = np.where(used, 1.0 / s_eff**2, 0.0)
    sw = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (w * val).sum(axis=1) / sw
        chi2 = (w * np.where(used, (ratio - mean[:, None]) ** 2, 0.0)).sum(axis=1)
        # Birge ratio: when the reflections scatter more than their σ say, the mean's σ grows with it
        birge = np.sqrt(np.maximum(1.0, chi2 / np.maximum(1, used.sum(axis=1) - 1)))
        sig = birge / np.sqrt(sw)
    count = used.sum(axis=1)
    pair = disagree & (count == 2)
    unchecked = (count == 1) & ((left != OUTSIDE_RANGE).sum(axis=1) >= 2)
    frame = np.where(
        disagree,
        np.where(pair, FRAME_PAIR_DISAGREES, FRAME_PRECISE_OUTVOTED),
        np.where(unchecked, FRAME_UNCHECKED, np.where(count > 0, FRAME_OK, FRAME_NOTHING_FITTED)),
    )
    bad = frame != FRAME_OK
    return LatticeRatios(np.where(bad, np.nan, mean), np.where(bad, np.nan, sig), left, how_far, frame.astype(np.int8))
