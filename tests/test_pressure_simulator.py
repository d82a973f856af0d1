"""The simulator's gold follows Fei et al. 2007, so a pressure computed from demo data is right."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline_core import simulate as S
from pipeline_core.errors import ConfigError
from pipeline_core.science import PressureSettings, PressureTracker

from .pressure_patterns import fei_gold_pressure


def test_the_simulated_ramp_is_linear_in_pressure_on_fei_2007_to_100_gpa():
    n = 300
    assert [S.pressure_gpa(i, n) for i in (0, 150, 299)] == pytest.approx([0.0, 150 / 299 * 100, 100.0])
    for i in (0, 37, 150, 299):  # the paper's equation, written out in tests/pressure_patterns.py
        assert fei_gold_pressure(S.lattice_a(i, n)) == pytest.approx(S.pressure_gpa(i, n), abs=1e-6)
    assert S.AU_A_END == pytest.approx(3.72460, abs=1e-5)


def test_the_pressure_fit_recovers_the_simulated_ramp():
    """The simulator's own 1-D profiles (gold + background, the sample phase from mid-ramp), fitted on
    gold 111, which no sample line reaches in the simulation: every frame within 0.05 GPa."""
    n = 120
    scene = SimpleNamespace(grid=np.linspace(5.6, 23.9, 8000))  # the 2θ grid _Scene draws on
    rows = np.array([S._Scene.profile(scene, i, n) for i in range(n)])
    tracker = PressureTracker(PressureSettings("au", reflections=("111",)), scene.grid, "2th_deg", S.WAVELENGTH * 1e10)
    for start in range(0, n, 16):
        tracker.feed(np.arange(start, min(n, start + 16)), rows[start : start + 16])
    truth = np.array([S.pressure_gpa(i, n) for i in range(n)])
    assert np.all(np.abs(tracker.series.pressure - truth) < 0.05)


def test_where_the_sample_mimics_gold_the_frames_say_so_instead_of_a_wrong_number():
    """Late in the simulated ramp the B1 sample's 220 and 400 lie on gold 200 and 220 together (its
    lattice is about √2 gold's: its lines mimic the marker's), outvoting the clean, precise 111. With
    every reflection, each frame is right within 0.05 GPa or NaN saying why: never a silent wrong
    number."""
    n = 120
    scene = SimpleNamespace(grid=np.linspace(5.6, 23.9, 8000))
    rows = np.array([S._Scene.profile(scene, i, n) for i in range(n)])
    tracker = PressureTracker(PressureSettings("au"), scene.grid, "2th_deg", S.WAVELENGTH * 1e10)
    for start in range(0, n, 16):
        tracker.feed(np.arange(start, min(n, start + 16)), rows[start : start + 16])
    series = tracker.series
    truth = np.array([S.pressure_gpa(i, n) for i in range(n)])
    nan = np.isnan(series.pressure)
    assert np.all(np.abs(series.pressure[~nan] - truth[~nan]) < 0.05)
    assert nan[: n // 2].sum() == 0 and nan[-1]  # the sample appears mid-ramp; it lies on both at the end
    assert series.reason(n - 1) == (
        "111, 200, 220 disagree beyond their uncertainties and the most precise is outvoted: cannot tell "
        "which ones a sample peak overlaps"
    )


def test_settings_travel_as_versioned_dicts():
    settings = PressureSettings("pt", "platinum_dewaele_2019_mao_vinet", ("111", "200"), 12.5)
    assert PressureSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ConfigError, match="pressure settings version 7 is unknown; expected 1"):
        PressureSettings.from_dict({**settings.to_dict(), "version": 7})
