import h5py
import numpy as np
import pytest

from pipeline_core.errors import SourceError
from pipeline_core.formats.lambda_files import LambdaAcquisition, ModuleFile, parse_lambda_name
from pipeline_core.messages import FailedFrames
from pipeline_core.processing.sources import Hdf5Source, ImageSource, LambdaSource, open_sources

from .helpers import REAL_STEM, SMALL_FRAME, SMALL_OFFSETS, dioptas_stitch, write_module, write_small_acquisition


@pytest.mark.parametrize(
    "name, expected",
    [
        ("scan_m1_part00003.nxs", ("scan", 1, 3)),
        ("scan_m2.nxs", ("scan", 2, None)),
        ("a_b_c_m01.nxs", ("a_b_c", 1, None)),
        ("a_b_c_m03_part00000.nxs", ("a_b_c", 3, 0)),
        ("a_b_c_master.nxs", ("a_b_c", None, None)),
        ("scan.h5", None),
    ],
)
def test_parse_lambda_name(name, expected):
    parsed = parse_lambda_name(name)
    assert (None if parsed is None else (parsed.stem, parsed.module, parsed.part)) == expected


def test_real_acquisition_found_from_any_file(real_dir):
    for any_file in (f"{REAL_STEM}_m1_part00000.nxs", f"{REAL_STEM}_m3_part00004.nxs"):
        acq = LambdaAcquisition.from_file(real_dir / any_file)
        assert acq.stem == REAL_STEM
        assert acq.modules == (1, 2, 3)
        assert [p.index for p in acq.parts] == [0, 1, 2, 3, 4]
        assert acq.parts[2].files[1].name == f"{REAL_STEM}_m2_part00002.nxs"


def test_real_module_metadata(real_dir):
    m = ModuleFile.open(real_dir / f"{REAL_STEM}_m2_part00001.nxs")
    try:
        assert m.offset == (-2.0, 660.0)
        assert m.module_shape == (516, 1554)
        assert m.frame_numbers.tolist() == list(range(11, 21))
        assert m.pixel_mask is not None and m.pixel_mask.shape == (516, 1554)
    finally:
        m.close()


def test_real_source_stitches_like_dioptas(real_dir):
    source = LambdaSource.from_file(real_dir / f"{REAL_STEM}_m1_part00000.nxs")
    source.prepare()
    assert source.frame_shape == (1833, 1556)
    assert source.expected_frames() == 50
    chunk = next(source.chunks(4, pytest.fail))
    modules = []
    offsets = []
    for k in (1, 2, 3):
        with h5py.File(real_dir / f"{REAL_STEM}_m{k}_part00000.nxs", "r") as h5:
            modules.append(h5["entry/instrument/detector/data"][2])
            offsets.append(tuple(h5["entry/instrument/detector/translation/distance"][:2]))
    np.testing.assert_array_equal(chunk.frames[2], dioptas_stitch(modules, offsets))
    assert chunk.frame_numbers.tolist() == [1, 2, 3, 4]
    # gaps plus the files' own pixel_mask are masked
    assert 0.16 < source.detector_mask.mean() < 0.25


@pytest.mark.parametrize("naming", ["m{k}_part{p:05d}", "m0{k}"])
@pytest.mark.parametrize("compression", ["gzip", "bslz4"])
def test_both_naming_schemes_and_compressions(tmp_path, naming, compression):
    n_parts = 1 if naming == "m0{k}" else 2
    acq = write_small_acquisition(tmp_path, n_parts=n_parts, module_naming=naming, compression=compression)
    if naming == "m0{k}":
        (tmp_path / f"{acq['stem']}_master.nxs").write_bytes(b"")  # the master is found but not needed
    any_file = sorted(tmp_path.glob("*_m*"))[-1]
    source = LambdaSource.from_file(any_file)
    source.prepare()
    assert source.frame_shape == SMALL_FRAME
    frames = []
    for chunk in source.chunks(2, pytest.fail):
        frames.extend(chunk.frames)
    assert len(frames) == 3 * n_parts
    last = [acq["modules"][k][-1][-1] for k in (1, 2, 3)]
    np.testing.assert_array_equal(frames[-1], dioptas_stitch(last, SMALL_OFFSETS))


def test_missing_module_of_one_part_is_reported_not_skipped(tmp_path):
    write_small_acquisition(tmp_path, n_parts=2)
    (tmp_path / "scan_00001_m2_part00001.nxs").unlink()
    source = LambdaSource.from_file(tmp_path / "scan_00001_m1_part00000.nxs")
    failures: list[FailedFrames] = []
    numbers = [n for c in source.chunks(8, failures.append) for n in c.frame_numbers]
    assert numbers == [1, 2, 3]
    assert len(failures) == 1
    assert "scan_00001_m2_part00001.nxs is missing" in failures[0].reason
    assert failures[0].frame_numbers == [4, 5, 6]  # known from the module files that exist


def test_truncated_file_is_a_clear_error(tmp_path):
    write_small_acquisition(tmp_path, n_parts=2)
    victim = tmp_path / "scan_00001_m3_part00001.nxs"
    victim.write_bytes(victim.read_bytes()[:1500])
    source = LambdaSource.from_file(victim)  # the default retries: 3, 0.5 s apart
    failures: list[FailedFrames] = []
    numbers = [n for c in source.chunks(8, failures.append) for n in c.frame_numbers]
    assert numbers == [1, 2, 3]
    assert "truncated" in failures[0].reason and victim.name in failures[0].reason
    assert "after 4 attempts over 1.5 s" in failures[0].reason
    assert failures[0].frame_numbers == [4, 5, 6]


def test_corrupt_file_is_a_clear_error(tmp_path):
    write_small_acquisition(tmp_path, n_parts=1)
    victim = tmp_path / "scan_00001_m1_part00000.nxs"
    victim.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(SourceError, match=r"cannot be opened as HDF5.*after 4 attempts over 1.5 s"):
        ModuleFile.open(victim)  # the default retries: a file being written may look corrupt for a moment


def test_mismatched_module_shape_fails_that_part(tmp_path):
    write_small_acquisition(tmp_path, n_parts=2)
    write_module(tmp_path / "scan_00001_m2_part00001.nxs", np.ones((3, 21, 30), np.int16), SMALL_OFFSETS[1], 4)
    source = LambdaSource.from_file(tmp_path / "scan_00001_m1_part00000.nxs")
    failures: list[FailedFrames] = []
    numbers = [n for c in source.chunks(8, failures.append) for n in c.frame_numbers]
    assert numbers == [1, 2, 3]
    assert "module frames differ in shape" in failures[0].reason
    assert "scan_00001_m2_part00001.nxs 21 x 30" in failures[0].reason


def test_a_part_placed_unlike_the_first_part_fails(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=2)
    moved = (SMALL_OFFSETS[1][0] + 1, SMALL_OFFSETS[1][1])  # module 2 one column to the right in part 1
    write_module(tmp_path / "scan_00001_m2_part00001.nxs", acq["modules"][2][1], moved, 4)
    source = LambdaSource.from_file(tmp_path / "scan_00001_m1_part00000.nxs")
    failures: list[FailedFrames] = []
    numbers = [n for c in source.chunks(8, failures.append) for n in c.frame_numbers]
    assert numbers == [1, 2, 3]
    assert "unlike the first part" in failures[0].reason and failures[0].frame_numbers == [4, 5, 6]


def test_one_extra_frame_in_one_module_uses_the_minimum(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=1)
    extra = np.concatenate([acq["modules"][3][0], acq["modules"][3][0][:1]])
    write_module(tmp_path / "scan_00001_m3_part00000.nxs", extra, SMALL_OFFSETS[2])
    source = LambdaSource.from_file(tmp_path / "scan_00001_m3_part00000.nxs")
    numbers = [n for c in source.chunks(8, pytest.fail) for n in c.frame_numbers]
    assert numbers == [1, 2, 3]


def test_not_a_lambda_file_name():
    with pytest.raises(SourceError, match="not a Lambda file name"):
        LambdaAcquisition.from_file("/tmp/whatever.h5")


def test_generic_hdf5_source(tmp_path):
    data = np.arange(2 * 4 * 5, dtype=np.uint32).reshape(2, 4, 5)
    for i in range(2):
        with h5py.File(tmp_path / f"eiger_{i}.h5", "w") as h5:
            h5["entry/data/data"] = data + i
    (source,) = open_sources([tmp_path])
    assert isinstance(source, Hdf5Source)
    source.prepare()
    chunks = list(source.chunks(8, pytest.fail))
    assert [c.frame_numbers.tolist() for c in chunks] == [[1, 2], [3, 4]]
    np.testing.assert_array_equal(chunks[1].frames[1], data[1] + 1)


def test_generic_hdf5_without_dataset_names_the_paths(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as h5:
        h5["other"] = np.zeros((2, 3, 3))
    (source,) = open_sources([tmp_path / "x.h5"])
    with pytest.raises(SourceError, match="/entry/data/data"):
        source.prepare()


def test_image_source_with_fabio(tmp_path):
    import fabio.edfimage
    import fabio.tifimage

    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    fabio.edfimage.EdfImage(data=a).write(str(tmp_path / "f_0001.edf"))
    fabio.tifimage.TifImage(data=a * 2).write(str(tmp_path / "f_0002.tif"))
    (source,) = open_sources(sorted(tmp_path.iterdir()))
    assert isinstance(source, ImageSource)
    source.prepare()
    chunks = list(source.chunks(8, pytest.fail))
    assert [c.frame_numbers.tolist() for c in chunks] == [[1], [2]]
    np.testing.assert_array_equal(chunks[1].frames[0], a * 2)


def test_missing_source_path():
    with pytest.raises(SourceError, match="does not exist"):
        open_sources(["/nonexistent/dir/scan_m1.nxs"])


def test_float_frames_are_not_lambda_counts(tmp_path):
    write_small_acquisition(tmp_path, n_parts=1)
    write_module(tmp_path / "scan_00001_m2_part00000.nxs", np.ones((3, 20, 30), np.float64), SMALL_OFFSETS[1])
    with pytest.raises(SourceError, match=r"has dtype float64; expected integer counts"):
        ModuleFile.open(tmp_path / "scan_00001_m2_part00000.nxs")
