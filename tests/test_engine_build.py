"""The engine built in a child process integrates exactly like pyFAI's own ``integrate1d`` (issue 7 item 11).

Bit-identity is pyFAI's own path (``engine="pyfai"``); the csr engine, which takes the same child-built
coefficients, agrees within 1e-5 of the maximum (tests/test_csr_engine.py, and the last test here).

References are plain pyFAI calls written out here (a fresh ``pyFAI.load`` per case), never our code.
"""

from __future__ import annotations

import h5py
import numpy as np
import pyFAI
import pytest

from pipeline_core.formats.mask import save_mask_file
from pipeline_core.processing.engine_build import build_in_child
from pipeline_core.processing.engine_store import ENV_VAR
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings

from .helpers import REAL_STEM, SMALL_FRAME, dioptas_stitch

BINS = 40
METHOD = ("bbox", "csr", "cython")


@pytest.fixture(autouse=True)
def _always_build(monkeypatch):
    """These tests are about the build: no engine comes from the engine cache (tests/test_engine_store.py)."""
    monkeypatch.setenv(ENV_VAR, "off")


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 5000, SMALL_FRAME).astype(np.int32)


@pytest.fixture
def user_mask(tmp_path):
    mask = np.zeros(SMALL_FRAME, bool)
    mask[:6] = True
    mask[30:33, 10:20] = True
    save_mask_file(tmp_path / "user.edf", mask)
    return tmp_path / "user.edf", mask


def pyfai_reference(poni, frame, mask, bins=BINS, unit="2th_deg", polarization=0.99, solid_angle=True,
                    error_model=None, method=METHOD):
    return pyFAI.load(str(poni)).integrate1d(
        frame, bins, unit=unit, method=method, mask=mask, polarization_factor=polarization,
        correctSolidAngle=solid_angle, error_model=error_model,
    )


@pytest.mark.parametrize("unit", ["2th_deg", "q_nm^-1", "q_A^-1", "d_A"])
@pytest.mark.parametrize(("polarization", "solid_angle"), [(0.99, True), (None, False)])
def test_child_built_engine_is_bit_identical_to_pyfai(small_poni, frame, user_mask, unit, polarization, solid_angle):
    path, mask = user_mask
    settings = IntegrationSettings(small_poni, bins=BINS, unit=unit, mask_path=path, polarization_factor=polarization,
                                   correct_solid_angle=solid_angle)
    engine = IntegrationEngine(settings, SMALL_FRAME, isolate_build=True, engine="pyfai")
    assert engine.built_in_child
    ref = pyfai_reference(small_poni, frame, mask, unit=unit, polarization=polarization, solid_angle=solid_angle)
    got = engine.integrate(frame, 5)
    assert got.frame_number == 5 and got.sigma is None and got.invalid_pixels == 0
    np.testing.assert_array_equal(got.intensity, ref.intensity.astype(np.float32))
    np.testing.assert_array_equal(engine.radial, ref.radial)
    assert np.count_nonzero(got.intensity) > BINS // 2  # a real pattern, not bins of zeros


@pytest.mark.parametrize("error_model", ["poisson", "azimuthal"])
def test_sigma_of_each_error_model_is_bit_identical(small_poni, frame, user_mask, error_model):
    path, mask = user_mask
    engine = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS, unit="q_nm^-1", mask_path=path,
                                                   error_model=error_model), SMALL_FRAME,
                               isolate_build=True, engine="pyfai")
    assert engine.built_in_child
    ref = pyfai_reference(small_poni, frame, mask, unit="q_nm^-1", error_model=error_model)
    got = engine.integrate(frame)
    np.testing.assert_array_equal(got.intensity, ref.intensity.astype(np.float32))
    np.testing.assert_array_equal(got.sigma, ref.sigma.astype(np.float32))
    assert np.isfinite(got.sigma).all() and got.sigma.max() > 0


def test_without_any_mask_and_with_the_detector_mask(small_poni, frame):
    plain = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS), SMALL_FRAME, isolate_build=True,
                              engine="pyfai")
    assert plain.built_in_child
    np.testing.assert_array_equal(plain.integrate(frame).intensity,
                                  pyfai_reference(small_poni, frame, np.zeros(SMALL_FRAME, bool)).intensity)
    gaps = np.zeros(SMALL_FRAME, bool)
    gaps[:, 15:17] = True
    gapped = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS), SMALL_FRAME, detector_mask=gaps,
                               isolate_build=True, engine="pyfai")
    np.testing.assert_array_equal(gapped.integrate(frame).intensity, pyfai_reference(small_poni, frame, gaps).intensity)


def test_invalid_pixels_are_left_out_as_pyfai_masks_them(small_poni, user_mask):
    path, mask = user_mask
    frame = np.random.default_rng(3).uniform(1, 900, SMALL_FRAME).astype(np.float32)
    frame[40:44, 3:9] = -1.0
    frame[50, 20] = np.nan
    settings = IntegrationSettings(small_poni, bins=BINS, mask_path=path)
    child = IntegrationEngine(settings, SMALL_FRAME, isolate_build=True, engine="pyfai")
    assert child.built_in_child
    got = child.integrate(frame, 9)
    assert got.invalid_pixels == 25 and np.isfinite(got.intensity).all()
    bad = ~np.isfinite(frame) | (frame < 0)
    ref = pyfai_reference(small_poni, np.where(bad, 0, frame), mask | bad).intensity
    assert np.abs(got.intensity - ref).max() <= 1e-6 * ref.max()
    # and exactly what the in-process engine (pyFAI's integrate1d with its dummy value) gives
    np.testing.assert_array_equal(got.intensity, IntegrationEngine(settings, SMALL_FRAME, isolate_build=False,
                                                                   engine="pyfai").integrate(frame, 9).intensity)


def test_other_methods_keep_building_in_process(small_poni, frame):
    method = ("bbox", "histogram", "cython")
    engine = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS, method=method), SMALL_FRAME,
                               isolate_build=True)
    assert not engine.built_in_child
    ref = pyfai_reference(small_poni, frame, np.zeros(SMALL_FRAME, bool), method=method)
    np.testing.assert_array_equal(engine.integrate(frame).intensity, ref.intensity.astype(np.float32))


def test_full_pixel_splitting_is_built_in_the_child_too(small_poni, frame):
    method = ("full", "csr", "cython")
    engine = IntegrationEngine(IntegrationSettings(small_poni, bins=BINS, method=method), SMALL_FRAME,
                               isolate_build=True, engine="pyfai")
    assert engine.built_in_child
    ref = pyfai_reference(small_poni, frame, np.zeros(SMALL_FRAME, bool), method=method)
    np.testing.assert_array_equal(engine.integrate(frame).intensity, ref.intensity.astype(np.float32))


def test_small_frames_build_in_process_and_large_ones_in_the_child(small_poni):
    from pipeline_core.processing.integrate import CHILD_BUILD_MIN_PIXELS

    assert not IntegrationEngine(IntegrationSettings(small_poni, bins=BINS), SMALL_FRAME).built_in_child
    assert 1556 * 516 >= CHILD_BUILD_MIN_PIXELS  # a Lambda 750k frame goes to the child
    assert IntegrationEngine(IntegrationSettings(small_poni, bins=BINS), (1000, 500)).built_in_child


def test_the_child_refuses_a_bad_poni_or_method_as_in_process(tmp_path, small_poni):
    from pipeline_core.errors import ConfigError

    settings = IntegrationSettings(tmp_path / "gone.poni", bins=BINS).to_dict()
    with pytest.raises(ConfigError, match=r"PONI file .*gone\.poni does not exist"):
        build_in_child(settings, SMALL_FRAME, np.zeros(SMALL_FRAME, bool))
    nan_poni = tmp_path / "nan.poni"
    nan_poni.write_text(small_poni.read_text().replace("Distance: 0.01", "Distance: nan"))
    with pytest.raises(ConfigError, match=r"Distance = nan m is not a usable geometry"):
        IntegrationEngine(IntegrationSettings(nan_poni, bins=BINS), SMALL_FRAME, isolate_build=True)


def test_a_crashing_child_is_reported_with_its_exit_status(small_poni, monkeypatch):
    # a "child" that exits at once, before reading its request (a real process, a real broken pipe)
    monkeypatch.setattr("sys.executable", "/bin/false")
    with pytest.raises(RuntimeError, match=r"child process failed \(exit status 1\)"):
        build_in_child(IntegrationSettings(small_poni, bins=BINS).to_dict(), SMALL_FRAME, np.zeros(SMALL_FRAME, bool))


def test_real_p02_2_frame_is_bit_identical_to_pyfai(real_dir):
    per_module, offsets, masks = [], [], []
    for k in (1, 2, 3):
        with h5py.File(real_dir / f"{REAL_STEM}_m{k}_part00000.nxs", "r") as h5:
            det = h5["entry/instrument/detector"]
            per_module.append(det["data"][3])
            offsets.append(tuple(det["translation/distance"][:2]))
            masks.append(det["pixel_mask"][0] != 0 if "pixel_mask" in det else np.zeros(per_module[-1].shape, bool))
    frame = dioptas_stitch(per_module, offsets)
    mask = (dioptas_stitch([np.ones_like(m) for m in masks], offsets) == 0) | dioptas_stitch(masks, offsets)
    poni = real_dir / "L2.poni"
    engine = IntegrationEngine(IntegrationSettings(poni, error_model="poisson"), frame.shape, detector_mask=mask,
                               engine="pyfai")
    assert engine.built_in_child
    ref = pyfai_reference(poni, frame, mask, bins=2048, error_model="poisson")
    got = engine.integrate(frame, 4)
    np.testing.assert_array_equal(got.intensity, ref.intensity.astype(np.float32))
    np.testing.assert_array_equal(got.sigma, ref.sigma.astype(np.float32))
    assert got.intensity.max() > 0


def test_full_splitting_through_the_csr_engine_agrees_with_pyfai(small_poni, frame, user_mask):
    """The csr engine takes the child's arrays for pixel splitting other than bbox too."""
    path, mask = user_mask
    method = ("full", "csr", "cython")
    settings = IntegrationSettings(small_poni, bins=BINS, method=method, mask_path=path, error_model="poisson")
    engine = IntegrationEngine(settings, SMALL_FRAME, isolate_build=True)
    assert engine.built_in_child and engine.used.name == "csr"
    ref = pyfai_reference(small_poni, frame, mask, method=method, error_model="poisson")
    got = engine.integrate(frame)
    assert np.abs(got.intensity - ref.intensity).max() <= 1e-5 * ref.intensity.max()
    assert np.abs(got.sigma - ref.sigma).max() <= 1e-5 * ref.sigma.max()
