"""The csr engine (issue 11) against pyFAI's own ``integrate1d``, frame by frame.

References are never our code: module frames are read with h5py and stitched by the Dioptas rule
written out in ``tests/helpers.py``; the mask is built here from the files (gaps + ``pixel_mask``)
plus the user's mask; the pattern is pyFAI ``integrate1d`` with the same settings. Agreement asked:
max |ours - pyFAI| <= 1e-5 x the pattern's maximum, for 2θ, q and d, with and without the
polarization and solid-angle corrections, on the real P02.2 acquisition and on simulated Lambda 2M
data (tilted geometry; the P02.2 module offsets and others). Each engine is built once per module.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pyFAI
import pytest

from pipeline_core.cli import main
from pipeline_core.errors import ConfigError
from pipeline_core.formats.mask import save_mask_file
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.processing.engine_choice import DEFAULT_ENGINE, validate_engine
from pipeline_core.processing.frame_batch import integrate_batch
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource, read_part_range
from pipeline_core.simulate import simulate_acquisition

from .helpers import (
    REAL_DIR,
    REAL_STEM,
    SMALL_FRAME,
    SMALL_OFFSETS,
    dioptas_stitch,
    write_module,
    write_small_acquisition,
)

TOL = 1e-5
METHOD = ("bbox", "csr", "cython")
#: units and corrections checked on each data set: (unit, polarization, solid angle, error model)
CASES = [
    ("2th_deg", 0.99, True, None),
    ("q_nm^-1", 0.99, True, "poisson"),
    ("d_A", 0.99, True, None),
    ("2th_deg", None, False, "poisson"),
]


def read_reference(first_file, frames=(0, 1)) -> tuple[list[np.ndarray], np.ndarray, list[tuple]]:
    """Dioptas-stitched frames and the gaps | pixel_mask mask of one part, with h5py only."""
    stem = first_file.name.replace("_m1_", "_m{k}_")
    per_module, offsets, flags = [], [], []
    for k in (1, 2, 3):
        with h5py.File(first_file.parent / stem.format(k=k), "r") as h5:
            det = h5["entry/instrument/detector"]
            per_module.append(det["data"][list(frames)])
            offsets.append(tuple(det["translation/distance"][:2]))
            flags.append(det["pixel_mask"][()].reshape(det["data"].shape[1:]) != 0)
    gaps = dioptas_stitch([np.ones_like(f, np.uint8) for f in flags], offsets) == 0
    mask = gaps | dioptas_stitch(flags, offsets)
    stitched = [dioptas_stitch([m[i] for m in per_module], offsets) for i in range(len(frames))]
    return stitched, mask, offsets


def pyfai_ref(ai, frame, settings: IntegrationSettings, mask):
    return ai.integrate1d(
        frame, settings.bins, unit=settings.unit, method=METHOD, mask=mask,
        polarization_factor=settings.polarization_factor, correctSolidAngle=settings.correct_solid_angle,
        error_model=settings.error_model,
    )  # fmt: skip


def assert_like_pyfai(pattern, ref, what: str) -> None:
    peak = float(np.max(ref.intensity))
    assert peak > 0 and np.count_nonzero(ref.intensity) > 0.5 * len(ref.intensity), what  # a real pattern
    diff = float(np.max(np.abs(pattern.intensity - ref.intensity)))
    assert diff <= TOL * peak, f"{what}: max |diff| {diff:.3g} > {TOL} x max {peak:.3g}"
    if ref.sigma is None or not len(np.atleast_1d(ref.sigma)) or pattern.sigma is None:
        assert pattern.sigma is None, what
    else:
        top = float(np.max(ref.sigma))
        assert float(np.max(np.abs(pattern.sigma - ref.sigma))) <= TOL * top, f"{what}: sigma"


def check_data_set(source, settings_list, stitched, mask, batch, label) -> None:
    """Every settings value: csr engine on the module frames == pyFAI on the Dioptas-stitched frames."""
    ai = pyFAI.load(str(settings_list[0].poni_path))
    for settings in settings_list:
        engine = IntegrationEngine(settings, source.frame_shape, source.detector_mask)
        assert engine.used.name == "csr", engine.used
        patterns = integrate_batch(engine, batch)
        assert patterns.failed == []
        for i, frame in enumerate(stitched):
            ref = pyfai_ref(ai, frame, settings, mask)
            np.testing.assert_allclose(engine.radial, ref.radial, rtol=1e-12)
            row = type("P", (), {"intensity": patterns.intensities[i],
                                 "sigma": None if patterns.sigma is None else patterns.sigma[i]})
            what = f"{label} {settings.unit} pol={settings.polarization_factor} sa={settings.correct_solid_angle} " \
                   f"{settings.error_model} frame {i}"
            assert_like_pyfai(row, ref, what)


# -- real P02.2 acquisition -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_user_mask(tmp_path_factory):
    if not (REAL_DIR / f"{REAL_STEM}_m1_part00000.nxs").exists():
        pytest.skip(f"real P02.2 data not found at {REAL_DIR} (../shared beside the checkout)")
    mask = np.zeros((1833, 1556), bool)
    mask[900:960, :500] = True  # a beamstop holder's shadow
    path = tmp_path_factory.mktemp("real") / "user.npy"
    save_mask_file(path, mask)
    return path, mask


def test_real_p02_2_frames_equal_pyfai_for_every_unit_and_correction(real_user_mask):
    path, user = real_user_mask
    first = REAL_DIR / f"{REAL_STEM}_m1_part00000.nxs"
    source = LambdaSource.from_file(first)
    source.prepare()
    stitched, mask, _ = read_reference(first, frames=(0, 7))
    batch = read_part_range(LambdaSource.from_file(first).acquisition.parts[0].files, 0, 8)
    keep = np.array([0, 7])
    batch.frame_numbers, batch.index_in_file = batch.frame_numbers[keep], batch.index_in_file[keep]
    batch.modules.data = batch.modules.data[keep]
    bins = {"2th_deg": 4038, "q_nm^-1": 2048, "d_A": 1500}  # the beamline's 4038 bins in 2θ
    settings = [
        IntegrationSettings(REAL_DIR / "L2.poni", bins=bins[unit], unit=unit, mask_path=path, polarization_factor=pol,
                            correct_solid_angle=sa, error_model=em)
        for unit, pol, sa, em in CASES
    ]  # fmt: skip
    check_data_set(source, settings, stitched, mask | user, batch, "real P02.2")


# -- simulated Lambda 2M, tilted geometry -------------------------------------------------------------
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    acq = simulate_acquisition(tmp_path_factory.mktemp("sim"), frames=2, frames_per_file=2, compression="bslz4")
    with h5py.File(acq.module_files[0][0], "r") as h5:  # the simulator's PONI is tilted: check it is
        assert h5["entry/instrument/detector/data"].shape[0] == 2
    ai = pyFAI.load(str(acq.poni_path))
    assert abs(ai.rot1) > 1e-3 and abs(ai.rot2) > 1e-4
    return acq


def test_simulated_lambda_2m_equals_pyfai_for_every_unit_and_correction(simulated):
    acq = simulated
    first = acq.module_files[0][0]
    source = LambdaSource.from_file(first)
    source.prepare()
    stitched, mask, _ = read_reference(first)
    import fabio

    user = fabio.open(str(acq.mask_path)).data != 0
    batch = next(source.chunks(2, pytest.fail))
    settings = [
        IntegrationSettings(acq.poni_path, bins=1000, unit=unit, mask_path=acq.mask_path, polarization_factor=pol,
                            correct_solid_angle=sa, error_model=em)
        for unit, pol, sa, em in CASES
    ]  # fmt: skip
    check_data_set(source, settings, stitched, mask | user, batch, "simulated")


def test_other_module_offsets_are_folded_into_the_columns(simulated, tmp_path):
    """The simulator's module frames rewritten with other offsets (wider gaps, shifted columns)."""
    acq = simulated
    offsets = ((0.0, 0.0), (5.0, 540.0), (-3.0, 1110.0))
    hot = np.zeros((516, 1554), np.uint32)
    hot[100, 200] = hot[300:303, 1000] = 2
    for k in range(3):
        with h5py.File(acq.module_files[k][0], "r") as h5:
            frames = h5["entry/instrument/detector/data"][()]
        write_module(tmp_path / f"shift_00001_m{k + 1}_part00000.nxs", frames, offsets[k], compression="gzip",
                     pixel_mask=hot)  # fmt: skip
    first = tmp_path / "shift_00001_m1_part00000.nxs"
    source = LambdaSource.from_file(first)
    source.prepare()
    stitched, mask, _ = read_reference(first)
    assert source.frame_shape == stitched[0].shape != (1833, 1556)
    user = np.zeros(stitched[0].shape, bool)
    user[:, :40] = True
    save_mask_file(tmp_path / "user.npy", user)
    settings = IntegrationSettings(acq.poni_path, bins=800, unit="q_nm^-1", mask_path=tmp_path / "user.npy",
                                   error_model="poisson")  # fmt: skip
    check_data_set(source, [settings], stitched, mask | user, next(source.chunks(2, pytest.fail)), "shifted")


# -- invalid pixels, gaps integrated as zeros, the stitched path --------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    poni = tmp / "small.poni"
    from .helpers import SMALL_PONI

    poni.write_text(SMALL_PONI.replace("Rot1: 0.0", "Rot1: 0.05").replace("Rot2: 0.0", "Rot2: -0.03"))
    acq = write_small_acquisition(tmp / "raw", n_parts=1, frames_per_part=3, compression="bslz4")
    return poni, acq


def test_negative_and_nan_pixels_are_left_out_of_their_frame_only(small):
    poni, acq = small
    settings = IntegrationSettings(poni, bins=30, unit="2th_deg", error_model="poisson")
    batch = read_part_range(acq["files"][:3], 0, 3)
    engine = IntegrationEngine(settings, SMALL_FRAME, batch.detector_mask)
    assert engine.used.name == "csr"
    gaps = batch.detector_mask
    ai = pyFAI.load(str(poni))
    modules = batch.modules
    modules.data = modules.data.copy()
    modules.data[1, 50:80] = -7  # negative counts in one frame, in module 1
    modules.data[1, 700] = -1
    stitched = modules.stitched()
    bad = stitched < 0
    assert bad.sum() == 31
    patterns = integrate_batch(engine, batch)
    assert patterns.invalid_pixels == 31
    for i in range(3):  # the same floats, summed per bin in column order: module and stitched orders differ
        same = engine.integrate(stitched[i])
        np.testing.assert_allclose(same.intensity, patterns.intensities[i], rtol=2e-6)
        np.testing.assert_allclose(same.sigma, patterns.sigma[i], rtol=2e-6)
    for i in range(3):
        invalid = stitched[i] < 0
        ref = ai.integrate1d(stitched[i], 30, unit="2th_deg", method=METHOD, mask=gaps | invalid,
                             polarization_factor=0.99, correctSolidAngle=True, error_model="poisson")
        row = type("P", (), {"intensity": patterns.intensities[i], "sigma": patterns.sigma[i]})
        assert_like_pyfai(row, ref, f"frame {i}")
    # NaN and negative in a float frame (a generic HDF5 source): the stitched path
    frame = stitched[2].astype(np.float32)
    frame[10:12, :] = np.nan
    frame[40, 3:9] = -2.5
    got = engine.integrate(frame, 9)
    assert got.invalid_pixels == 2 * SMALL_FRAME[1] + 6
    invalid = ~np.isfinite(frame) | (frame < 0)
    ref = ai.integrate1d(np.where(invalid, 0, frame), 30, unit="2th_deg", method=METHOD, mask=gaps | invalid,
                         polarization_factor=0.99, correctSolidAngle=True, error_model="poisson")
    assert_like_pyfai(got, ref, "float frame with NaN")
    assert np.isfinite(got.intensity).all() and np.isfinite(got.sigma).all()
    # every pixel invalid: every bin empty, as pyFAI's dummy gives
    none = engine.integrate(np.full(SMALL_FRAME, -1, np.int32))
    assert none.invalid_pixels == SMALL_FRAME[0] * SMALL_FRAME[1] and not none.intensity.any()


def test_unmasked_gaps_count_as_zeros_like_pyfai_and_both_paths_agree(small):
    poni, acq = small
    batch = read_part_range(acq["files"][:3], 0, 3)
    ai = pyFAI.load(str(poni))
    for error_model in (None, "poisson"):
        settings = IntegrationSettings(poni, bins=25, unit="q_nm^-1", error_model=error_model)
        engine = IntegrationEngine(settings, SMALL_FRAME, None)  # gaps not masked: pyFAI integrates zeros
        patterns = integrate_batch(engine, batch)
        for i, frame in enumerate(batch.frames):
            ref = ai.integrate1d(frame, 25, unit="q_nm^-1", method=METHOD, polarization_factor=0.99,
                                 error_model=error_model)  # fmt: skip
            row = type("P", (), {"intensity": patterns.intensities[i],
                                 "sigma": None if patterns.sigma is None else patterns.sigma[i]})
            assert_like_pyfai(row, ref, f"unmasked gaps {error_model} frame {i}")
            stitched = engine.integrate(frame)  # same coefficients; summed in another column order
            np.testing.assert_allclose(stitched.intensity, patterns.intensities[i], rtol=2e-6)
            if error_model:  # a gap's variance (1) is summed apart from the module columns': rounding differs
                np.testing.assert_allclose(stitched.sigma, patterns.sigma[i], rtol=2e-6)


@pytest.mark.parametrize("inflater", ["libdeflate", "zlib"])
def test_module_frames_read_raw_equal_the_files_for_both_compressions(tmp_path, monkeypatch, inflater):
    """DEFLATE chunks are read raw and inflated by threads (libdeflate when installed, else zlib)."""
    from pipeline_core.formats import lambda_part

    if inflater == "zlib":
        monkeypatch.setattr(lambda_part, "_libdeflate", None)
    elif lambda_part._libdeflate is None:
        pytest.skip("the optional libdeflate bindings (PyPI deflate) are not installed; zlib inflates")
    for compression in ("gzip", "bslz4"):
        acq = write_small_acquisition(tmp_path / compression, n_parts=1, frames_per_part=3, compression=compression,
                                      dtype=np.uint16)  # fmt: skip
        source = LambdaSource.from_file(acq["files"][0])
        source.set_decode_threads(2)  # DEFLATE chunks inflated by threads
        batches = list(source.chunks(2, pytest.fail))
        assert [len(b.frame_numbers) for b in batches] == [2, 1]
        assert batches[0].modules.data.dtype == np.uint16
        for b in batches:
            for j, i in enumerate(b.index_in_file):
                expected = dioptas_stitch([acq["modules"][k][0][i] for k in (1, 2, 3)], SMALL_OFFSETS)
                np.testing.assert_array_equal(b.frames[j], expected)
    # a corrupt DEFLATE stream costs its frame, named with its file, never the process
    victim = tmp_path / "gzip" / "scan_00001_m2_part00000.nxs"
    with h5py.File(victim, "r") as h5:
        offset = h5["entry/instrument/detector/data"].id.get_chunk_info(1).byte_offset
    blob = bytearray(victim.read_bytes())
    blob[offset + 40 : offset + 80] = bytes(40)
    victim.write_bytes(bytes(blob))
    failures: list = []
    source = LambdaSource.from_file(victim)
    source.set_decode_threads(2)
    numbers = [int(n) for b in source.chunks(2, failures.append) for n in b.frame_numbers]
    assert numbers == [1, 3] and [f.frame_numbers for f in failures] == [[2]]
    assert victim.name in failures[0].reason and "cannot be read" in failures[0].reason


# -- choosing the engine; provenance ------------------------------------------------------------------
def test_azimuthal_and_non_csr_methods_fall_back_to_pyfai_and_say_why(small):
    poni, _ = small
    frame = np.random.default_rng(3).poisson(50, SMALL_FRAME).astype(np.int32)
    ai = pyFAI.load(str(poni))
    azimuthal = IntegrationEngine(IntegrationSettings(poni, bins=20, error_model="azimuthal"), SMALL_FRAME)
    assert azimuthal.used.name == "pyfai" and "azimuthal" in azimuthal.used.note
    ref = ai.integrate1d(frame, 20, method=METHOD, unit="2th_deg", polarization_factor=0.99, error_model="azimuthal")
    np.testing.assert_array_equal(azimuthal.integrate(frame).sigma, ref.sigma.astype(np.float32))
    histogram = IntegrationEngine(IntegrationSettings(poni, bins=20, method=("bbox", "histogram", "cython")),
                                  SMALL_FRAME)  # fmt: skip
    assert histogram.used.name == "pyfai" and "bbox,histogram,cython" in histogram.used.note
    with pytest.raises(ConfigError, match="engine csr cannot integrate these settings exactly: the azimuthal"):
        IntegrationEngine(IntegrationSettings(poni, bins=20, error_model="azimuthal"), SMALL_FRAME, engine="csr")
    chosen = IntegrationEngine(IntegrationSettings(poni, bins=20), SMALL_FRAME, engine="pyfai")
    assert chosen.used.name == "pyfai" and "chosen" in chosen.used.note
    np.testing.assert_array_equal(chosen.integrate(frame).intensity,
                                  ai.integrate1d(frame, 20, method=METHOD, unit="2th_deg",
                                                 polarization_factor=0.99).intensity.astype(np.float32))
    with pytest.raises(ConfigError, match=r"engine 'gpu' is unknown; expected one of auto, csr, pyfai"):
        validate_engine("gpu")


def _engine_recorded(path) -> tuple[str, str]:
    with h5py.File(path, "r") as h5:
        proc = h5["processed/process"]
        return proc["engine"][()].decode(), proc["engine_note"][()].decode()


def test_the_engine_used_is_recorded_and_two_workers_share_the_csr_engine(small, tmp_path):
    poni, acq = small
    source = LambdaSource.from_file(acq["files"][0])
    one = integrate_source(source, IntegrationSettings(poni, bins=20), tmp_path / "one.nxs")
    two = integrate_source(LambdaSource.from_file(acq["files"][0]), IntegrationSettings(poni, bins=20),
                           tmp_path / "two.nxs", workers=2, chunk_size=1)  # fmt: skip
    assert _engine_recorded(one.output)[0] == _engine_recorded(two.output)[0] == "csr"
    with h5py.File(one.output) as a, h5py.File(two.output) as b:
        np.testing.assert_array_equal(a["processed/result/data"][()], b["processed/result/data"][()])
    az = integrate_source(LambdaSource.from_file(acq["files"][0]), IntegrationSettings(poni, bins=20,
                          error_model="azimuthal"), tmp_path / "az.nxs")  # fmt: skip
    name, note = _engine_recorded(az.output)
    assert name == "pyfai" and "azimuthal" in note
    with pytest.raises(ConfigError, match="'fast' is unknown"):
        integrate_source(source, IntegrationSettings(poni, bins=20), tmp_path / "bad.nxs", engine="fast")


def test_cli_engine_option_is_passed_through_recorded_and_a_bad_value_refused(small, tmp_path, capsys):
    poni, acq = small
    args = ["integrate", str(acq["directory"]), "--poni", str(poni), "--bins", "20"]
    assert main([*args, "-o", str(tmp_path / "pyfai.nxs"), "--engine", "pyfai"]) == 0
    assert _engine_recorded(tmp_path / "pyfai.nxs")[0] == "pyfai"
    assert main([*args, "-o", str(tmp_path / "auto.nxs")]) == 0
    assert _engine_recorded(tmp_path / "auto.nxs")[0] == "csr"
    with h5py.File(tmp_path / "pyfai.nxs") as a, h5py.File(tmp_path / "auto.nxs") as b:
        ours, theirs = b["processed/result/data"][()], a["processed/result/data"][()]
        assert np.max(np.abs(ours - theirs)) <= TOL * np.max(theirs)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "-o", str(tmp_path / "x.nxs"), "--engine", "gpu"])
    assert exc.value.code == 2
    assert "--engine: invalid choice: 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "x.nxs").exists()


def test_an_integrator_with_an_unknown_engine_says_so_and_claims_nothing(small):
    poni, _ = small
    errors: list[str] = []

    class Counting:
        claims = 0

        def claim(self, request):
            Counting.claims += 1
            return None

    stage = IntegrateStage("int0", IntegrationSettings(poni, bins=10), Counting(), print, errors.append, engine="gpu")
    stage._drain("poll")
    assert Counting.claims == 0 and len(errors) == 1
    assert "engine 'gpu' is unknown; expected one of auto, csr, pyfai" in errors[0]
    ok = IntegrateStage("int1", IntegrationSettings(poni, bins=10), Counting(), print, errors.append, engine="pyfai")
    assert ok.engines.engine == "pyfai" and ok.engine_error is None


def test_the_integrator_device_takes_its_engine_default_from_the_core():
    from tango_servers.integrator import Integrator

    assert Integrator.Engine.default_value == DEFAULT_ENGINE == "auto"


class _SlowDecoders(ThreadPoolExecutor):
    """Decoder threads on a loaded machine: every inflate but the corrupt one's starts late."""

    def __init__(self, corrupt_frame: int, module: Path):
        super().__init__(4)
        self._corrupt = (module, corrupt_frame)

    def submit(self, fn, /, *args, **kwargs):
        job = getattr(fn, "__self__", args[0] if args else None)
        late = (job.path, job.frame) != self._corrupt

        def run():
            if late:
                time.sleep(0.3)
            return fn(*args, **kwargs)

        return super().submit(run)


def test_a_corrupt_deflate_chunk_fails_only_after_every_other_inflate_of_the_read_has_finished(tmp_path):
    """Seen in CI under load: a frame next to a corrupt one got pixels of the corrupt frame's other
    modules, because the read raised at the first failure while the other inflates still wrote into
    the buffer the caller then reused. Nothing may write into the buffer once the read has returned."""
    from pipeline_core.errors import SourceError
    from pipeline_core.formats.lambda_part import open_part

    acq = write_small_acquisition(tmp_path, n_parts=1, frames_per_part=3, compression="gzip", dtype=np.uint16)
    victim = Path(acq["files"][0])  # module 1, frame 0: the first inflate of the read
    with h5py.File(victim, "r") as h5:
        offset = h5["entry/instrument/detector/data"].id.get_chunk_info(0).byte_offset
    blob = bytearray(victim.read_bytes())
    blob[offset + 40 : offset + 80] = bytes(40)
    victim.write_bytes(bytes(blob))
    with open_part(acq["files"]) as part, _SlowDecoders(0, victim) as decoders:
        buffer = np.zeros((3, part.layout.module_pixels), part.module_dtype)
        with pytest.raises(SourceError, match="cannot be read"):
            part.read_modules(0, 3, buffer, decoders)
        after_raise = buffer.copy()
        time.sleep(0.6)  # longer than the late inflates take
        np.testing.assert_array_equal(buffer, after_raise)
    assert after_raise[1:].any(), "the other frames were inflated before the read raised"


# -- frames in blocks (issue 21) ------------------------------------------------------------------------
@pytest.mark.parametrize(("block", "slab"), [(1, 1 << 18), (3, 1 << 18), (4, 500), (16, 500)])
def test_a_block_of_frames_equals_one_product_per_frame_and_pyfai(small, block, slab, monkeypatch):
    """Blocks of every size give the patterns of one product per frame, bit for bit, and pyFAI's; negative
    pixels in module frames and NaN/negative ones in float frames are left out of their frame only. The
    columns in one slab, or in slabs of 500 (a Lambda 2M frame has ten slabs)."""
    from pipeline_core.processing import csr_engine
    from pipeline_core.processing.block_size import BlockSize

    monkeypatch.setattr(csr_engine, "SLAB_COLUMNS", slab)
    poni, acq = small
    settings = IntegrationSettings(poni, bins=30, unit="q_nm^-1", error_model="poisson")
    batch = read_part_range(acq["files"][:3], 0, 3)
    engine = IntegrationEngine(settings, SMALL_FRAME, batch.detector_mask)
    engine._sparse.block = BlockSize(candidates=(block,), trials=1)
    assert len(engine._sparse.columns_for(batch.modules.layout).slabs) == (1 if slab > 2000 else 4)
    rng = np.random.default_rng(5)
    modules = batch.modules
    modules.data = rng.integers(0, 3000, (10, modules.data.shape[1])).astype(modules.data.dtype)
    modules.data[2, 50:80] = -3  # inside the frame: the masked reference keeps pyFAI's radial range
    modules.data[7, 400] = -1
    batch.frame_numbers = batch.index_in_file = np.arange(10)
    patterns = integrate_batch(engine, batch)
    assert patterns.failed == [] and patterns.invalid_pixels == 31
    assert engine._sparse.block.chosen == (block if block <= 10 else None)  # 16: never a full block to time
    ai = pyFAI.load(str(poni))
    stitched = modules.stitched()
    for i in range(10):
        one = engine.integrate_modules(modules, i)
        np.testing.assert_array_equal(one.intensity, patterns.intensities[i])
        np.testing.assert_array_equal(one.sigma, patterns.sigma[i])
        invalid = stitched[i] < 0
        ref = ai.integrate1d(stitched[i], 30, unit="q_nm^-1", method=METHOD, mask=batch.detector_mask | invalid,
                             polarization_factor=0.99, correctSolidAngle=True, error_model="poisson")
        np.testing.assert_allclose(engine.radial, ref.radial, rtol=1e-12)
        row = type("P", (), {"intensity": patterns.intensities[i], "sigma": patterns.sigma[i]})
        assert_like_pyfai(row, ref, f"block {block} frame {i}")
    floats = stitched[:5].astype(np.float32)
    floats[1, 10:12] = np.nan
    floats[3, 40, 3:9] = -2.5
    got = engine.integrate_block(floats, None)
    assert list(got.invalid) == [0, 2 * SMALL_FRAME[1], 30, 6, 0]  # frame 2: the module frame's -3
    for i in range(5):
        one = engine.integrate(floats[i])
        np.testing.assert_array_equal(one.intensity, got.intensity[i])
        np.testing.assert_array_equal(one.sigma, got.sigma[i])
        assert np.isfinite(got.intensity[i]).all() and np.isfinite(got.sigma[i]).all()


def test_the_block_size_is_chosen_by_timing_each_candidate():
    from pipeline_core.processing.block_size import BlockSize

    sizes = BlockSize(candidates=(1, 4, 8), trials=2)
    cost = {1: 0.020, 4: 0.010, 8: 0.012}  # seconds a frame, as a machine might measure
    handed = []
    while sizes.chosen is None:
        k = sizes.next(8)
        handed.append(k)
        sizes.record(k, cost[k] * k)
    assert handed == [1, 1, 4, 4, 8, 8] and sizes.chosen == 4 and sizes.next(3) == 3 and sizes.next(9) == 4
    assert sizes.describe() == "k=1 20.0 ms/frame, k=4 10.0 ms/frame, k=8 12.0 ms/frame -> 4"
    small = BlockSize(candidates=(1, 2, 4), trials=1)  # batches of 2 frames: 1 and 2 are timed, then chosen
    for k, cost_s in ((1, 0.010), (2, 0.030)):
        assert small.next(2) == k
        small.record(k, cost_s)
    assert small.chosen == 1 and small.describe() == "k=1 10.0 ms/frame, k=2 15.0 ms/frame -> 1"
