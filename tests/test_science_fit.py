"""The pressure fit on patterns pyFAI made (tests/pressure_patterns.py): gold at known lattice
parameters through the real Lambda geometry, a sample line on gold 200 part of the way."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline_core.science import PressureSettings, PressureTracker
from pipeline_core.science.lattice import combine
from pipeline_core.science.series import PressureSeries

from .pressure_patterns import OVERLAP, make_patterns

REFLECTIONS = ("111", "200", "220")


@pytest.fixture(scope="module")
def patterns():
    return make_patterns()


@pytest.fixture(scope="module")
def clean(patterns):
    return patterns.integrate()


def _tracker(patterns, axis, unit="2th_deg"):
    return PressureTracker(PressureSettings("au", reflections=REFLECTIONS), axis, unit, patterns.wavelength_a)


def test_clean_patterns_give_the_pressure_within_0_05_gpa_from_0_to_100(patterns, clean):
    axis, rows = clean
    tracker = _tracker(patterns, axis)
    for start in range(0, len(rows), 4):  # batches of 4, as a live Merger gets them
        tracker.feed(np.arange(start, min(len(rows), start + 4)) + 1, rows[start : start + 4])
    series = tracker.series
    assert series.frame_number.tolist() == list(range(1, len(rows) + 1))
    error = np.abs(series.pressure - patterns.pressure)
    assert np.all(error < 0.05), dict(zip(patterns.pressure.round(1), error.round(3), strict=True))
    assert np.all(series.pressure_sigma > 0)
    # the overlapped 200 is left out, by name, where its fit disagrees; never the clean ones
    dropped = [k for k in range(len(rows)) if "200: off the others" in series.left_out_text(k)]
    assert dropped and set(dropped) <= set(OVERLAP), dropped
    assert all(series.used(k) == list(REFLECTIONS) for k in range(len(rows)) if k not in OVERLAP)
    assert all(series.used(k) == ["111", "220"] for k in dropped)


def test_one_batch_of_the_whole_ramp_and_out_of_order_batches_agree(patterns, clean):
    """A batch spanning 0-100 GPa still follows (frames without a value retry from the others), and
    batches arriving in any order (live Integrators) give the same pressures."""
    axis, rows = clean
    whole = _tracker(patterns, axis).feed(np.arange(len(rows)), rows)
    tracker = _tracker(patterns, axis)
    for start in (12, 4, 16, 0, 8, 20):
        tracker.feed(np.arange(start, min(len(rows), start + 4)), rows[start : start + 4])
    shuffled = tracker.series
    assert np.all(np.abs(whole.pressure - patterns.pressure) < 0.05)
    assert np.all(np.abs(shuffled.pressure - patterns.pressure) < 0.05)


def test_a_q_axis_gives_the_same_pressures(patterns):
    """d from the radial axis in q (1/nm): no wavelength needed, same answer."""
    images = patterns.images[::5]
    axis, rows = patterns.integrate(images, unit="q_nm^-1")
    tracker = PressureTracker(PressureSettings("au", reflections=REFLECTIONS), axis, "q_nm^-1", None)
    series = tracker.feed(np.arange(len(rows)), rows)
    assert np.all(np.abs(series.pressure - patterns.pressure[::5]) < 0.05)


def test_with_poisson_noise_the_sigma_covers_the_error(patterns):
    """Counting noise: about 68 % of frames within 1 sigma of the truth (and all within 5 sigma)."""
    rng = np.random.default_rng(1)
    pick = [k for k in range(len(patterns.pressure)) if k not in OVERLAP] * 4
    images = rng.poisson(patterns.images[pick] * 0.03).astype(np.float32)  # ~30 counts on a ring, 1.5 beside
    axis, rows = patterns.integrate(images)
    truth = patterns.pressure[pick]
    order = np.argsort(truth, kind="stable")
    tracker = _tracker(patterns, axis)
    series = tracker.feed(np.arange(len(rows)), rows[order])
    z = (series.pressure - truth[order]) / series.pressure_sigma
    assert np.isfinite(z).all()
    within = float(np.mean(np.abs(z) < 1))
    assert 0.55 <= within <= 0.9, (within, np.round(z, 2))
    assert np.all(np.abs(z) < 5), np.round(z, 2)


def test_a_frame_without_the_marker_is_nan_with_the_reason(patterns, clean):
    axis, rows = clean
    rows = rows[:3].copy()
    rows[1] = 50.0 + np.random.default_rng(0).normal(0, 1, rows.shape[1])  # nothing but background
    series = _tracker(patterns, axis).feed([1, 2, 3], rows)
    assert np.isfinite(series.pressure[[0, 2]]).all()
    assert np.isnan(series.pressure[1]) and np.isnan(series.pressure_sigma[1])
    assert series.reason(1).startswith("no reflection fitted (111: ")
    assert series.records()[1] == {
        "frame_number": 2, "pressure_gpa": None, "pressure_sigma_gpa": None, "lattice_a_angstrom": None,
        "reflections_used": [],
    }  # fmt: skip


def test_two_reflections_that_disagree_give_nan_naming_both(patterns, clean):
    """With only 111 and 200 and a sample line on 200, nobody can tell which is right: NaN, said."""
    axis, rows = clean
    k = OVERLAP[len(OVERLAP) // 2]
    settings = PressureSettings("au", reflections=("111", "200"), start_pressure_gpa=float(patterns.pressure[k]))
    tracker = PressureTracker(settings, axis, "2th_deg", patterns.wavelength_a)
    series = tracker.feed([k], rows[k : k + 1])
    assert np.isnan(series.pressure[0])
    assert series.reason(0).startswith("111 and 200 disagree beyond their uncertainties")


def test_a_d_axis_running_downwards_gives_the_same_pressures(patterns, clean):
    """d from a d axis: rows stored against decreasing d (q converted to d by hand) are turned round."""
    axis, rows = patterns.integrate(patterns.images[::5], unit="q_nm^-1")
    d_axis = 20 * np.pi / axis  # decreasing
    tracker = PressureTracker(PressureSettings("au", reflections=REFLECTIONS), d_axis, "d_A", None)
    series = tracker.feed(np.arange(len(rows)), rows)
    assert np.all(np.abs(series.pressure - patterns.pressure[::5]) < 0.05)


# -- fast ramps (issue 19): the right pressure or NaN with a reason, never a wrong number ------------


def _all_reflections(patterns, axis):
    """Gold 111-222, as ``xrd-pipeline pressure`` fits by default: 311 and 222 are 4.4 % apart in d."""
    return PressureTracker(PressureSettings("au"), axis, "2th_deg", patterns.wavelength_a)


def _feed_blocks(tracker, rows, sizes, order=None):
    edges = np.cumsum([0, *sizes])
    blocks = list(zip(edges[:-1], edges[1:], strict=True))
    for a, b in [blocks[i] for i in order] if order is not None else blocks:
        tracker.feed(np.arange(a, b), rows[a:b])
    return tracker.series


def _errors(series, truth):
    """{true pressure: value read} of the frames whose value is off by 0.05 GPa or more, or NaN."""
    off = ~(np.abs(series.pressure - truth) < 0.05)
    return {float(t): round(float(p), 2) for t, p in zip(truth[off], series.pressure[off], strict=True)}


@pytest.fixture(scope="module")
def ramp_2_5(patterns):
    """41 frames, 0 to 100 GPa at 2.5 GPa per frame."""
    fine = make_patterns(tuple(np.linspace(0.0, 100.0, 41)))
    return fine, fine.integrate()


def test_5_gpa_per_frame_fed_16_then_5_as_the_merged_file_step_does(patterns, clean):
    """Was: frames 9-16 read 4-22 GPa instead of 40-75 (gold 222's window on gold 311, alone)."""
    axis, rows = clean
    series = _feed_blocks(_all_reflections(patterns, axis), rows, [16, 5])
    assert _errors(series, patterns.pressure) == {}


@pytest.mark.parametrize("reflections", [None, REFLECTIONS])
def test_a_whole_ramp_at_2_5_gpa_per_frame_in_one_batch(ramp_2_5, reflections):
    """Was: frames 29-32 read 19.6-23.7 GPa instead of 70-77.5."""
    fine, (axis, rows) = ramp_2_5
    tracker = PressureTracker(PressureSettings("au", reflections=reflections), axis, "2th_deg", fine.wavelength_a)
    series = tracker.feed(np.arange(len(rows)), rows)
    assert _errors(series, fine.pressure) == {}


@pytest.mark.parametrize(
    ("sizes", "order"),
    [([3] * 7, [2, 1, 3, 6, 0, 4, 5]), ([3] * 7, [2, 4, 3, 6, 5, 0, 1]), ([1] * 21, None), ([5, 16], [1, 0]),
     ([8, 2, 1, 4, 6], [3, 0, 4, 2, 1])],
)  # fmt: skip
def test_5_gpa_per_frame_in_any_block_size_and_order(patterns, clean, sizes, order):
    """Live Integrators finish out of order; the first two orders read -5.8 to -1 GPa at 20-30."""
    axis, rows = clean
    series = _feed_blocks(_all_reflections(patterns, axis), rows, sizes, order)
    assert series.frame_number.tolist() == list(range(len(rows)))
    assert _errors(series, patterns.pressure) == {}


def test_20_gpa_between_frames_each_frame_on_its_own_is_found_by_the_scan():
    """Past what a window centred on the last frame can follow, every frame is found over the whole
    range of lattice parameters (two or more reflections that agree), whatever the order."""
    fast = make_patterns((0.0, 20.0, 40.0, 60.0, 80.0, 100.0))
    axis, rows = fast.integrate()
    in_order = _feed_blocks(_all_reflections(fast, axis), rows, [6])
    backwards = _feed_blocks(_all_reflections(fast, axis), rows, [1] * 6, [5, 4, 3, 2, 1, 0])
    assert _errors(in_order, fast.pressure) == {} and _errors(backwards, fast.pressure) == {}


def test_one_reflection_alone_among_several_in_range_is_nan_with_the_reason():
    """Only gold 222 fitted where 111-311 lie in range too (what a too fast ramp made of 60 GPa):
    nothing says the peak fitted is 222 and not 311, so NaN, said; one reflection is kept only when
    it was the only one asked for or the only one inside the radial range."""
    labels = ("111", "200", "220", "311", "222")
    ratio = np.array([[np.nan] * 4 + [1.0445], [np.nan] * 4 + [0.97], [0.97] * 5])
    sigma = np.where(np.isfinite(ratio), 1e-5, np.nan)
    problem = np.array([[1, 1, 1, 1, 0], [4, 4, 4, 4, 0], [0, 0, 0, 0, 0]], np.int8)
    lat = combine(ratio, sigma, problem)
    assert np.isnan(lat.ratio[0]) and lat.ratio[1:].tolist() == [0.97, 0.97]
    alone = combine(ratio[:1, 4:], sigma[:1, 4:], problem[:1, 4:])  # the only reflection asked for
    assert alone.ratio.tolist() == [1.0445]
    n = len(ratio)
    series = PressureSeries(labels, np.arange(n), lat.ratio, lat.sigma, lat.ratio, lat.sigma, ratio, sigma,
                            lat.left_out, lat.outlier_sigma, lat.frame_problem)  # fmt: skip
    assert series.used(0) == [] and series.used(1) == ["222"]
    assert series.reason(0) == (
        "only 222 fitted, nothing to check that it is 222 and not a neighbour (moved too fast from the frames "
        "before?) (111: no peak above the noise; 200: no peak above the noise; 220: no peak above the noise; "
        "311: no peak above the noise)"
    )
    assert series.reason(1) == ""


def _right_or_said(series, truth):
    """Frames off by 0.05 GPa or more that have a number (NaN frames must say why)."""
    nan = np.flatnonzero(np.isnan(series.pressure))
    assert all(series.reason(k) for k in nan), [series.reason(k) for k in nan]
    return {k: v for k, v in _errors(series, truth).items() if np.isfinite(v)}


@pytest.mark.parametrize(
    "blocks",
    [[(0, 2), (2, 41)], [(33, 38), (38, 41), (0, 4), (26, 30), (4, 6), (6, 14), (30, 33), (14, 18), (18, 26)]],
)
def test_one_reflection_alone_is_never_carried_onto_another_peak(ramp_2_5, blocks):
    """Gold 111 alone (nothing to check it against): the rate at 2 GPa carried 38 frames on put 111's
    window on gold 200 (100 GPa read 804); a window whose highest bin was its edge fitted the flank of
    111 (72.5 read 74.9). Now each frame is right, or NaN with the reason."""
    fine, (axis, rows) = ramp_2_5
    tracker = PressureTracker(PressureSettings("au", reflections=("111",)), axis, "2th_deg", fine.wavelength_a)
    for a, b in blocks:
        tracker.feed(np.arange(a, b), rows[a:b])
    series = tracker.series
    assert _right_or_said(series, fine.pressure) == {}
    assert np.isfinite(series.pressure[:4]).all()  # the start of the ramp, at least, is followed
