import h5py
import numpy as np
import pytest

from pipeline_core.errors import OutputError
from pipeline_core.formats.nexus import MergedFileWriter, read_merged
from pipeline_core.messages import FailedFrames
from pipeline_core.output import reserve_output
from pipeline_core.processing.integrate import IntegrationSettings

BINS = 16
RADIAL = np.linspace(5, 25, BINS)


def _writer(tmp_path, small_poni, **settings):
    path = reserve_output(tmp_path / "scan.nxs")
    s = IntegrationSettings(small_poni, bins=BINS, **settings)
    return MergedFileWriter(path, RADIAL, s, ["p0_m1.nxs", "p1_m1.nxs", "p2_m1.nxs"], ["a", "b"], "scan")


def _rows(numbers):
    numbers = np.asarray(numbers)
    return numbers, np.repeat(numbers[:, None].astype(np.float32), BINS, axis=1)


def test_out_of_order_batches_end_up_ordered_without_duplicates(tmp_path, small_poni):
    with _writer(tmp_path, small_poni) as w:
        for part, numbers in ((2, [7, 8, 9]), (0, [1, 2, 3]), (1, [4, 5, 6]), (1, [5, 6])):
            n, data = _rows(numbers)
            w.add(n, data, file_index=np.full(len(n), part), index_in_file=np.arange(len(n)))
        assert w.duplicates_ignored == 2
    m = read_merged(tmp_path / "scan.nxs")
    assert m["frame_number"].tolist() == list(range(1, 10))
    np.testing.assert_array_equal(m["data"][:, 0], np.arange(1, 10))
    assert m["pos_map"][:, 0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert m["file_map"].tolist() == [0, 3, 6, 9]
    assert m["status"] == "complete"


def test_duplicates_within_one_batch(tmp_path, small_poni):
    with _writer(tmp_path, small_poni) as w:
        n, data = _rows([3, 1, 3])
        assert w.add(n, data) == 2
    assert read_merged(tmp_path / "scan.nxs")["frame_number"].tolist() == [1, 3]


def test_nexus_default_plot_attributes(tmp_path, small_poni):
    with _writer(tmp_path, small_poni) as w:
        w.add(*_rows([1, 2]))
    with h5py.File(tmp_path / "scan.nxs", "r") as h5:
        assert h5.attrs["default"] == "processed"
        entry = h5["processed"]
        assert entry.attrs["NX_class"] == "NXentry" and entry.attrs["default"] == "result_2th"
        view = entry["result_2th"]
        assert view.attrs["NX_class"] == "NXdata" and view.attrs["signal"] == "I"
        assert list(view.attrs["axes"]) == ["frame_number", "two_theta"] and view.attrs["interpretation"] == "image"
        np.testing.assert_array_equal(view["two_theta"][()], RADIAL)
        assert view["two_theta"].attrs["units"] == "deg"
        result = entry["result"]  # NXazint1d's NXdata, and what Dioptas reads by path
        assert result.attrs["NX_class"] == "NXdata" and result.attrs["signal"] == "I"
        assert list(result.attrs["axes"]) == [".", "radial_axis"] and result.attrs["interpretation"] == "spectrum"
        np.testing.assert_array_equal(result["data"][()][:, 0], [1, 2])
        assert result["binning"].attrs["units"] == "deg"
        assert result["binning"].attrs["radial_unit"] == "2th_deg"
        proc = entry["process"]
        assert proc.attrs["NX_class"] == "NXprocess"
        # what Dioptas' Batch View reads unconditionally
        assert proc["cal_file"][()].decode().endswith("small.poni")
        assert "Distance: 0.01" in proc["poni"][()].decode()
        assert proc["int_unit"][()] == b"2th_deg" and proc["num_points"][()] == BINS
        assert proc["int_method"][()] == b"bbox,csr,cython"
        assert proc["polarization_factor"][()] == pytest.approx(0.99)
        assert [f.decode() for f in proc["files"][()]] == ["p0_m1.nxs", "p1_m1.nxs", "p2_m1.nxs"]
        assert proc["start_time"][()] and proc["end_time"][()]
        np.testing.assert_allclose(np.diff(result["binning"][()]), np.diff(RADIAL)[0])


def test_silx_finds_a_valid_default_plot(tmp_path, small_poni):
    from silx.io.nxdata import get_default

    with _writer(tmp_path, small_poni, unit="q_nm^-1") as w:
        w.add(*_rows([1, 2, 3]))
    with h5py.File(tmp_path / "scan.nxs", "r") as h5:
        nxdata = get_default(h5)
        assert nxdata is not None and nxdata.is_valid
        assert nxdata.group.name == "/processed/result_q"
        assert nxdata.signal.shape == (3, BINS)
        assert [a.name for a in nxdata.axes] == ["/processed/result_q/frame_number", "/processed/result_q/q"]
        assert h5["processed/result_q/q"].attrs["units"] == "1/nm"
        # Batch View still gets an evenly spaced axis in a unit it knows
        assert h5["processed/result/binning"].attrs["radial_unit"] == "q_A^-1"
        np.testing.assert_allclose(h5["processed/result/binning"][()], RADIAL / 10)
        np.testing.assert_array_equal(h5["processed/result_q/data"][()], h5["processed/result/data"][()])


def test_sigma_is_stored_as_data_errors(tmp_path, small_poni):
    with _writer(tmp_path, small_poni, error_model="poisson") as w:
        n, data = _rows([2, 1])
        w.add(n, data, sigma=data * 0.5)
    m = read_merged(tmp_path / "scan.nxs")
    np.testing.assert_array_equal(m["sigma"][:, 0], [0.5, 1.0])


def test_failed_frames_are_listed_with_reason(tmp_path, small_poni):
    with _writer(tmp_path, small_poni) as w:
        w.add(*_rows([1, 2, 3]))
        w.add_failure(FailedFrames("/data/scan_m2_part00001.nxs", "truncated: 10 bytes", [4, 5, 6, 8]))
    m = read_merged(tmp_path / "scan.nxs")
    assert m["failed_files"] == ["/data/scan_m2_part00001.nxs"]
    assert m["failed_reasons"] == ["truncated: 10 bytes"]
    assert m["failed_frames"] == ["4-6,8"]
    assert m["status"] == "incomplete"


def test_reserve_output_never_overwrites(tmp_path):
    first = reserve_output(tmp_path / "scan.nxs")
    first.write_bytes(b"precious")
    second = reserve_output(tmp_path / "scan.nxs")
    third = reserve_output(tmp_path / "scan.nxs")
    assert (first.name, second.name, third.name) == ("scan.nxs", "scan_v001.nxs", "scan_v002.nxs")
    assert first.read_bytes() == b"precious"
    # asking for a version name continues the series instead of nesting _v001_v001
    assert reserve_output(tmp_path / "scan_v001.nxs").name == "scan_v003.nxs"


def test_reserve_output_in_unwritable_place():
    with pytest.raises(OutputError, match="cannot"):
        reserve_output("/proc/xrd-test/scan.nxs")


def test_the_file_is_a_part_until_closed_and_a_taken_name_is_never_overwritten(tmp_path, small_poni):
    w = _writer(tmp_path, small_poni)
    assert w.file_path == tmp_path / "scan.nxs.part" and not (tmp_path / "scan.nxs").exists()
    w.add(*_rows([1, 2]))
    (tmp_path / "scan.nxs").write_bytes(b"someone else's")  # taken meanwhile
    assert w.close() == tmp_path / "scan_v001.nxs" == w.path
    assert (tmp_path / "scan.nxs").read_bytes() == b"someone else's"
    assert read_merged(w.path)["status"] == "complete" and not (tmp_path / "scan.nxs.part").exists()


def test_a_suspended_or_failed_writer_keeps_the_part_name(tmp_path, small_poni):
    with pytest.raises(RuntimeError):
        with _writer(tmp_path, small_poni) as w:
            w.add(*_rows([1]))
            raise RuntimeError("boom")
    m = read_merged(tmp_path / "scan.nxs.part")
    assert m["status"] == "failed" and not m["finished"] and not (tmp_path / "scan.nxs").exists()
    # a part name is taken too: the next reservation skips it, and leaves no empty file behind
    nxt = reserve_output(tmp_path / "scan.nxs")
    assert nxt.name == "scan_v001.nxs" and sorted(p.name for p in tmp_path.iterdir()) == [
        "scan.nxs.part", "scan_v001.nxs.part", "small.poni"]
