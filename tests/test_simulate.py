import math

import fabio
import h5py
import hdf5plugin
import numpy as np
import pyFAI
import pytest
from scipy.signal import find_peaks

from pipeline_core.errors import OutputError
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
from pipeline_core.processing.sources import LambdaSource
from pipeline_core.simulate import simulate_acquisition

from .helpers import dioptas_stitch
from .pressure_patterns import fei_gold_a


@pytest.fixture(scope="module")
def acquisition(tmp_path_factory):
    calls = []
    acq = simulate_acquisition(
        tmp_path_factory.mktemp("sim"),
        frames=6,
        frames_per_file=4,
        compression="bslz4",
        on_part_written=lambda part, paths, n: calls.append((part, paths, n)),
    )
    return acq, calls


def test_files_follow_the_detector_layout(acquisition):
    acq, calls = acquisition
    names = sorted(p.name for p in acq.directory.glob("*.nxs"))
    assert names == [f"ramp_00001_m{k}_part{p:05d}.nxs" for k in (1, 2, 3) for p in (0, 1)]
    assert [(part, [p.name for p in paths], n) for part, paths, n in calls] == [
        (0, [f"ramp_00001_m{k}_part00000.nxs" for k in (1, 2, 3)], 4),
        (1, [f"ramp_00001_m{k}_part00001.nxs" for k in (1, 2, 3)], 2),
    ]
    with h5py.File(acq.module_files[1][1], "r") as h5:
        det = h5["entry/instrument/detector"]
        assert det["data"].shape == (2, 516, 1554) and det["data"].dtype == np.int16
        assert det["data"].chunks == (1, 516, 1554)
        assert str(hdf5plugin.BSHUF_ID) in det["data"]._filters
        assert det["description"][()].tolist() == [b"Lambda"]
        assert det["translation/distance"][()].tolist() == [-2.0, 660.0, 0.0]
        assert det["sequence_number"][()].tolist() == [5, 6]
        assert det["collection/frame_numbers"][()].tolist() == [6]
        assert h5["entry"].attrs["NX_class"] == "NXentry"


def test_dead_pixels_are_flagged(acquisition):
    acq, _ = acquisition
    module, row, col = acq.dead_pixels[0]
    with h5py.File(acq.module_files[module][0], "r") as h5:
        assert h5["entry/instrument/detector/pixel_mask"][0, row, col] != 0
        assert h5["entry/instrument/detector/data"][0, row, col] == 4095


#: Gold (fcc) at ambient pressure, Å; the simulator documents a ramp linear in pressure from 0 to
#: 100 GPa on the Fei et al. 2007 gold scale (a = 3.7246 Å at the last frame). The test states both
#: values itself; the lattice between comes from the paper's equation (tests/pressure_patterns.py).
AU_AMBIENT_A, AU_END_A = 4.0787, 3.7246
AU_REFLECTIONS = [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1)]
WAVELENGTH_A = 0.4836  # P02.2, as in the simulator's PONI
BINS = 2000


def bragg_2theta_deg(a: float, hkl: tuple[int, int, int]) -> float:
    """2θ = 2 asin(λ / 2d), d = a / sqrt(h² + k² + l²) for a cubic lattice."""
    d = a / math.sqrt(sum(i * i for i in hkl))
    return math.degrees(2 * math.asin(WAVELENGTH_A / (2 * d)))


def _stitched_frame_and_mask(acq, index):
    """Frame ``index`` of part 0 stitched by the test's Dioptas rule, and gaps | pixel_mask | user mask."""
    data, flags, offsets = [], [], []
    for k in range(3):
        with h5py.File(acq.module_files[k][0], "r") as h5:
            det = h5["entry/instrument/detector"]
            data.append(det["data"][index])
            flags.append(det["pixel_mask"][0] != 0)
            offsets.append(tuple(det["translation/distance"][:2]))
    gaps = dioptas_stitch([np.ones_like(f, np.uint8) for f in flags], offsets) == 0
    user = fabio.open(str(acq.mask_path)).data != 0
    return dioptas_stitch(data, offsets), gaps | dioptas_stitch(flags, offsets) | user


@pytest.mark.parametrize("index", [0, 2, 3])  # frames 1, 3 and 4 of 6 (part 0 holds frames 1-4)
def test_gold_peaks_sit_at_hand_computed_bragg_angles(acquisition, index):
    acq, _ = acquisition
    a = fei_gold_a(100.0 * index / (acq.n_frames - 1))
    frame, mask = _stitched_frame_and_mask(acq, index)
    ai = pyFAI.load(str(acq.poni_path))
    result = ai.integrate1d(frame, BINS, unit="2th_deg", mask=mask, polarization_factor=0.99)
    width = result.radial[1] - result.radial[0]
    peaks, _ = find_peaks(result.intensity, prominence=5)
    found = result.radial[peaks]
    if index == 0:  # no sample phase yet: the four gold rings and nothing else
        assert len(found) == len(AU_REFLECTIONS)
    for hkl in AU_REFLECTIONS:
        expected = bragg_2theta_deg(a, hkl)
        if expected > result.radial[-1]:
            continue  # off the detector at high pressure (Au 311 beyond ~23.4°)
        nearest = found[np.argmin(np.abs(found - expected))]
        # the highest bin of a peak lies within one bin of its centre
        assert abs(nearest - expected) <= width, f"Au {hkl} at frame {index + 1}: {nearest:.4f} vs {expected:.4f}"


def test_gold_rings_move_to_higher_angle_along_the_ramp(acquisition):
    acq, _ = acquisition
    # the last frame (index 5, in part 1): a = 3.7246 Å, Au 111 moves from 11.79° to 12.91°
    first, last = bragg_2theta_deg(AU_AMBIENT_A, (1, 1, 1)), bragg_2theta_deg(AU_END_A, (1, 1, 1))
    assert first == pytest.approx(11.787, abs=1e-3) and last == pytest.approx(12.912, abs=1e-3)
    source = LambdaSource.from_file(acq.module_files[0][0])
    source.prepare()
    engine = IntegrationEngine(
        IntegrationSettings(acq.poni_path, bins=BINS, mask_path=acq.mask_path), source.frame_shape, source.detector_mask
    )
    frames = [f for c in source.chunks(8, pytest.fail) for f in c.frames]
    width = engine.radial[1] - engine.radial[0]
    window = (engine.radial > first - 0.25) & (engine.radial < last + 0.25)
    peaks = [engine.radial[window][np.argmax(engine.integrate(f).intensity[window])] for f in (frames[0], frames[-1])]
    assert abs(peaks[0] - first) <= width and abs(peaks[1] - last) <= width


def test_gzip_and_uint32(tmp_path):
    acq = simulate_acquisition(tmp_path, frames=1, frames_per_file=1, compression="gzip", dtype="uint32")
    with h5py.File(acq.module_files[2][0], "r") as h5:
        assert h5["entry/instrument/detector/data"].compression == "gzip"
        assert h5["entry/instrument/detector/data"].dtype == np.uint32


def test_never_overwrites(acquisition):
    acq, _ = acquisition
    with pytest.raises(OutputError, match="already holds files of ramp_00001"):
        simulate_acquisition(acq.directory, frames=1)
