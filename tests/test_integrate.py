import numpy as np
import pyFAI
import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.formats.mask import save_mask_file
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings, read_poni

FRAME = (67, 32)


def _frame(seed=0):
    return np.random.default_rng(seed).poisson(100, FRAME).astype(np.int32)


@pytest.mark.parametrize("engine_name", ["auto", "pyfai"])
@pytest.mark.parametrize("unit", ["2th_deg", "q_nm^-1", "q_A^-1", "d_A"])
@pytest.mark.parametrize("error_model", [None, "poisson"])
def test_engine_equals_pyfai_integrate1d(small_poni, tmp_path, unit, error_model, engine_name):
    gaps = np.zeros(FRAME, bool)
    gaps[20:24] = True
    user = np.zeros(FRAME, bool)
    user[:, :3] = True
    save_mask_file(tmp_path / "user.edf", user)
    settings = IntegrationSettings(
        small_poni, bins=50, unit=unit, mask_path=tmp_path / "user.edf", error_model=error_model
    )
    engine = IntegrationEngine(settings, FRAME, gaps, engine=engine_name)
    assert engine.used.name == ("csr" if engine_name == "auto" else "pyfai")
    ai = pyFAI.load(str(small_poni))
    for seed in range(3):
        frame = _frame(seed)
        ours = engine.integrate(frame, seed)
        ref = ai.integrate1d(
            frame,
            50,
            unit=unit,
            method=("bbox", "csr", "cython"),
            mask=gaps | user,
            polarization_factor=0.99,
            correctSolidAngle=True,
            error_model=error_model,
        )
        np.testing.assert_allclose(engine.radial, ref.radial, rtol=1e-12)
        nz = ref.intensity != 0
        assert nz.sum() > 10
        assert np.max(np.abs(ours.intensity[nz] - ref.intensity[nz]) / np.abs(ref.intensity[nz])) <= 1e-5
        assert np.all(ours.intensity[~nz] == 0)
        if error_model:
            np.testing.assert_allclose(ours.sigma, ref.sigma, rtol=1e-5)
        else:
            assert ours.sigma is None


@pytest.mark.parametrize(
    "polarization, solid_angle, error_model",
    [
        (None, True, None),
        (0.99, False, None),
        (None, False, "azimuthal"),
        (0.99, True, "azimuthal"),
        (-0.5, True, "poisson"),
    ],
)
@pytest.mark.parametrize("engine_name", ["auto", "pyfai"])
def test_corrections_and_error_models_equal_pyfai_integrate1d(small_poni, polarization, solid_angle, error_model,
                                                               engine_name):
    """Polarization off, solid angle off and the azimuthal error model, each against pyFAI itself."""
    gaps = np.zeros(FRAME, bool)
    gaps[20:24] = True
    settings = IntegrationSettings(
        small_poni, bins=30, polarization_factor=polarization, correct_solid_angle=solid_angle, error_model=error_model
    )
    engine = IntegrationEngine(settings, FRAME, gaps, engine=engine_name)
    # auto: the csr engine, except for the azimuthal error model (pyFAI's own path, and it says why)
    assert engine.used.name == ("pyfai" if engine_name == "pyfai" or error_model == "azimuthal" else "csr")
    ai = pyFAI.load(str(small_poni))
    frame = _frame(4)
    ours = engine.integrate(frame, 1)
    ref = ai.integrate1d(
        frame,
        30,
        unit="2th_deg",
        method=("bbox", "csr", "cython"),
        mask=gaps,
        polarization_factor=polarization,
        correctSolidAngle=solid_angle,
        error_model=error_model,
    )
    assert np.max(np.abs(ours.intensity - ref.intensity)) <= 1e-5 * np.max(ref.intensity)
    if error_model is None:
        assert ours.sigma is None
    else:
        np.testing.assert_allclose(ours.sigma, ref.sigma, rtol=1e-5, atol=1e-6 * np.nanmax(ref.sigma))
    if error_model == "azimuthal":  # the spread of the pixels in a bin, not sqrt(counts): they must differ
        poisson = ai.integrate1d(frame, 30, mask=gaps, polarization_factor=polarization,
                                 correctSolidAngle=solid_angle, error_model="poisson")
        assert not np.allclose(ours.sigma, poisson.sigma, rtol=0.05)
    # the correction really is applied: the default corrections give a different pattern
    default = ai.integrate1d(frame, 30, mask=gaps, polarization_factor=0.99, correctSolidAngle=True)
    if (polarization, solid_angle) != (0.99, True):
        assert np.max(np.abs(ours.intensity - default.intensity)) > 1e-3 * np.max(default.intensity)


def test_masked_gaps_are_not_averaged_as_zeros(small_poni):
    gaps = np.zeros(FRAME, bool)
    gaps[20:40] = True
    frame = np.full(FRAME, 10.0)
    frame[gaps] = 0
    settings = IntegrationSettings(small_poni, bins=20, polarization_factor=None, correct_solid_angle=False)
    masked = IntegrationEngine(settings, FRAME, gaps).integrate(frame).intensity
    unmasked = IntegrationEngine(settings, FRAME, None).integrate(frame).intensity
    assert np.allclose(masked[masked > 0], 10.0)
    assert unmasked[unmasked > 0].mean() < 9.5


def test_polarization_none_differs_from_099(small_poni):
    frame = _frame()
    a = IntegrationEngine(IntegrationSettings(small_poni, bins=20), FRAME).integrate(frame).intensity
    b = (
        IntegrationEngine(IntegrationSettings(small_poni, bins=20, polarization_factor=None), FRAME)
        .integrate(frame)
        .intensity
    )
    assert not np.allclose(a, b)


@pytest.mark.parametrize("bins", [0, -5, 10**7, 2.5, True])
def test_bad_bins(small_poni, bins):
    with pytest.raises(ConfigError, match="bins"):
        IntegrationSettings(small_poni, bins=bins)


def test_unknown_unit(small_poni):
    with pytest.raises(ConfigError, match="unit 'furlong' is unknown; expected one of 2th_deg"):
        IntegrationSettings(small_poni, unit="furlong")


def test_bad_poni_is_refused(tmp_path):
    bad = tmp_path / "bad.poni"
    bad.write_text("this is not a calibration\n")
    with pytest.raises(ConfigError, match=r"bad.poni is not a pyFAI calibration: missing Distance"):
        read_poni(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_poni(tmp_path / "missing.poni")
    no_wavelength = tmp_path / "nowl.poni"
    no_wavelength.write_text("Distance: 0.1\nPoni1: 0.01\nPoni2: 0.01\n")
    with pytest.raises(ConfigError, match="no Wavelength"):
        read_poni(no_wavelength)


def test_mask_of_the_wrong_shape(small_poni, tmp_path):
    save_mask_file(tmp_path / "m.npy", np.zeros((10, 10), bool))
    settings = IntegrationSettings(small_poni, mask_path=tmp_path / "m.npy")
    with pytest.raises(ConfigError, match=r"m.npy has shape \(10, 10\) but the frames are \(67, 32\)"):
        IntegrationEngine(settings, FRAME)


def test_frame_of_the_wrong_shape(small_poni):
    engine = IntegrationEngine(IntegrationSettings(small_poni, bins=10), FRAME)
    with pytest.raises(ConfigError, match="frame 7 has shape"):
        engine.integrate(np.zeros((5, 5)), 7)


@pytest.mark.parametrize("engine_name", ["auto", "pyfai"])
def test_negative_and_nan_counts_are_left_out_not_averaged(small_poni, engine_name):
    engine = IntegrationEngine(
        IntegrationSettings(small_poni, bins=20, polarization_factor=None, correct_solid_angle=False), FRAME,
        engine=engine_name,
    )
    clean = np.full(FRAME, 10.0, np.float32)
    dirty = clean.copy()
    dirty[5:10] = -3.0
    dirty[30, 4] = np.nan
    result = engine.integrate(dirty, 1)
    assert result.invalid_pixels == 5 * 32 + 1
    valid = result.intensity != 0
    np.testing.assert_allclose(result.intensity[valid], 10.0, rtol=1e-6)
    assert engine.integrate(clean.astype(np.int32), 2).invalid_pixels == 0
    signed = np.full(FRAME, 10, np.int16)
    signed[0, 0] = -1
    assert engine.integrate(signed, 3).invalid_pixels == 1


def test_a_method_this_machine_cannot_run_is_refused(small_poni):
    try:
        import pyopencl  # noqa: F401

        pytest.skip("pyopencl is installed here: opencl may well be available")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="integration method bbox,csr,opencl is not available on this machine"):
        IntegrationEngine(IntegrationSettings(small_poni, bins=10, method=("bbox", "csr", "opencl")), FRAME)
    with pytest.raises(ConfigError, match="integration method bbox,nonsense,cython: Unsupported algo `nonsense`"):
        IntegrationEngine(IntegrationSettings(small_poni, bins=10, method=("bbox", "nonsense", "cython")), FRAME)
