import h5py
import hdf5plugin
import numpy as np
import pytest

from pipeline_core.errors import OutputError
from pipeline_core.integrate import IntegrationEngine, IntegrationSettings
from pipeline_core.simulate import au_peak_positions, simulate_acquisition
from pipeline_core.sources import LambdaSource


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


def test_gold_rings_move_to_higher_angle_along_the_ramp(acquisition):
    acq, _ = acquisition
    first, last = au_peak_positions(0, 6)[0], au_peak_positions(5, 6)[0]
    assert 11.5 < first < 12.0 and last > first + 0.3
    source = LambdaSource.from_file(acq.module_files[0][0])
    source.prepare()
    engine = IntegrationEngine(
        IntegrationSettings(acq.poni_path, bins=3000, mask_path=acq.mask_path), source.frame_shape, source.detector_mask
    )
    frames = [f for c in source.chunks(8, pytest.fail) for f in c.frames]
    window = (engine.radial > first - 0.25) & (engine.radial < last + 0.25)
    peaks = [engine.radial[window][np.argmax(engine.integrate(f).intensity[window])] for f in (frames[0], frames[-1])]
    assert peaks[0] == pytest.approx(first, abs=0.02)
    assert peaks[1] == pytest.approx(last, abs=0.02)


def test_gzip_and_uint32(tmp_path):
    acq = simulate_acquisition(tmp_path, frames=1, frames_per_file=1, compression="gzip", dtype="uint32")
    with h5py.File(acq.module_files[2][0], "r") as h5:
        assert h5["entry/instrument/detector/data"].compression == "gzip"
        assert h5["entry/instrument/detector/data"].dtype == np.uint32


def test_never_overwrites(acquisition):
    acq, _ = acquisition
    with pytest.raises(OutputError, match="already holds files of ramp_00001"):
        simulate_acquisition(acq.directory, frames=1)
