"""A part is stitched from every module that is on, or it fails (issue 17, item 1).

A module file missing, or one whose frames have another shape, used to give a `complete` file
integrated from the wrong pixels (a Lambda 2M frame of two modules is smaller, and flipped, every
pixel moves). Now such a part fails with its reason, listed in the file (exit 1); a module the user
says is off (``--modules 1,2``) keeps its place in the frame as a masked gap, and the file says so.
The reference for the rows is pyFAI's own ``integrate1d`` on a frame stitched here by Dioptas' rule.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pyFAI
import pytest

from pipeline_core.cli import main
from pipeline_core.formats import lambda_layout as L
from pipeline_core.formats.nexus import read_merged
from pipeline_core.formats.nexus_modules import read_modules
from pipeline_core.jobs.source import input_spec_for, open_job_source
from pipeline_core.jobs.spec import FrameRange, JobSpec
from pipeline_core.messages import FailedFrames
from pipeline_core.processing.frame_batch import integrate_batch
from pipeline_core.processing.integrate import IntegrationEngine, IntegrationSettings
from pipeline_core.processing.sources import open_sources, read_part_range
from pipeline_core.simulate import simulate_acquisition

from .helpers import SMALL_MODULE, SMALL_OFFSETS, dioptas_stitch, write_module, write_small_acquisition

FRAMES = 6


@pytest.fixture(scope="module")
def lambda_acq(tmp_path_factory):
    """A 6-frame, one-part Lambda 2M acquisition in the real geometry."""
    return simulate_acquisition(tmp_path_factory.mktemp("acq"), frames=FRAMES, frames_per_file=FRAMES)


def _copy_without(acq, tmp_path, module: int):
    """The acquisition's files, in a folder of the test's own, without module ``module``'s file."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for files in acq.module_files:
        for f in files:
            if f"_m{module}_" not in f.name:
                (raw / f.name).write_bytes(f.read_bytes())
    return raw


def _integrate(raw, acq, out, *extra):
    return main(["integrate", str(raw), "--poni", str(acq.poni_path), "--bins", "500", "-o", str(out), *extra])


def test_a_missing_module_file_fails_its_part_and_is_listed(lambda_acq, tmp_path, capsys):
    raw = _copy_without(lambda_acq, tmp_path, 3)
    assert _integrate(raw, lambda_acq, tmp_path / "out.nxs") == 1
    err = capsys.readouterr().err
    assert "ramp_00001_m3_part00000.nxs is missing" in err and "--modules 1,2" in err
    merged = read_merged(tmp_path / "out.nxs")
    assert merged["status"] == "incomplete" and merged["frame_number"].tolist() == []
    assert merged["failed_frames"] == [f"1-{FRAMES}"]
    assert "ramp_00001_m3_part00000.nxs is missing" in merged["failed_reasons"][0]


def test_modules_on_keep_their_places_and_the_file_records_the_module_off(lambda_acq, tmp_path, capsys):
    """--modules 1,2: rows equal pyFAI on the full-size frame with module 3's pixels masked."""
    raw = _copy_without(lambda_acq, tmp_path, 3)
    assert _integrate(raw, lambda_acq, tmp_path / "out.nxs", "--modules", "1,2") == 0
    merged = read_merged(tmp_path / "out.nxs")
    assert merged["status"] == "complete" and merged["frame_number"].tolist() == list(range(1, FRAMES + 1))
    with h5py.File(tmp_path / "out.nxs", "r") as h5:
        on, off, note = read_modules(h5)
    assert (on, off) == ([1, 2], [3]) and "m3 off (the user's --modules)" in note

    frames, masks = [], []
    for k in (1, 2):
        with h5py.File(raw / f"ramp_00001_m{k}_part00000.nxs", "r") as h5:
            frames.append(h5["entry/instrument/detector/data"][()])
            masks.append(h5["entry/instrument/detector/pixel_mask"][0] != 0)
    shape = frames[0].shape[1:]
    bad = dioptas_stitch([*masks, np.ones(shape, bool)], L.P02_2_OFFSETS)
    covered = dioptas_stitch([np.ones(shape, bool)] * 3, L.P02_2_OFFSETS)
    assert bad.shape == (1833, 1556)  # the full frame the PONI was calibrated on
    ai = pyFAI.load(str(lambda_acq.poni_path))
    for i in (0, FRAMES - 1):
        frame = dioptas_stitch([frames[0][i], frames[1][i], np.zeros(shape, frames[0].dtype)], L.P02_2_OFFSETS)
        ref = ai.integrate1d(frame, 500, unit="2th_deg", method=("bbox", "csr", "cython"), mask=bad | ~covered,
                             polarization_factor=0.99, correctSolidAngle=True)  # fmt: skip
        np.testing.assert_allclose(merged["binning"], ref.radial, rtol=1e-10)
        assert np.max(np.abs(merged["data"][i] - ref.intensity)) <= 1e-5 * np.max(ref.intensity)


def test_a_module_with_fewer_rows_than_its_layout_says_fails_its_part(lambda_acq, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for files in lambda_acq.module_files:
        for f in files:
            (raw / f.name).write_bytes(f.read_bytes())
    with h5py.File(raw / "ramp_00001_m2_part00000.nxs", "r+") as h5:
        det = h5["entry/instrument/detector"]
        short = det["data"][:, 10:, :]  # 10 rows fewer; the file's layout still says 1554X516
        del det["data"]
        det.create_dataset("data", data=short, chunks=(1, *short.shape[1:]), compression="gzip")
    assert _integrate(raw, lambda_acq, tmp_path / "out.nxs") == 1
    merged = read_merged(tmp_path / "out.nxs")
    assert merged["status"] == "incomplete" and merged["frame_number"].tolist() == []
    assert merged["failed_frames"] == [f"1-{FRAMES}"]
    reason = merged["failed_reasons"][0]
    assert "ramp_00001_m2_part00000.nxs: frames of 506 x 1554 pixels, but its layout says 1554X516" in reason


def test_modules_of_different_shapes_fail_their_part_only(tmp_path, small_poni):
    """Files without a layout field: a module unlike the others fails its part; other parts integrate."""
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, frames_per_part=3)
    short = acq["modules"][1][1][:, 2:, :]  # module 1, part 1: two rows fewer
    write_module(tmp_path / "raw" / "scan_00001_m1_part00001.nxs", short, SMALL_OFFSETS[0], 4)
    out = tmp_path / "out.nxs"
    assert main(["integrate", str(tmp_path / "raw"), "--poni", str(small_poni), "--bins", "20", "-o", str(out)]) == 1
    merged = read_merged(out)
    assert merged["frame_number"].tolist() == [1, 2, 3] and merged["failed_frames"] == ["4-6"]
    assert "module frames differ in shape (scan_00001_m1_part00001.nxs 18 x 30" in merged["failed_reasons"][0]
    assert SMALL_MODULE == (20, 30)


@pytest.mark.parametrize("text", ["0,1", "1,1", "a", "", "100"])
def test_modules_option_refuses_what_is_no_module_list(text, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["integrate", str(tmp_path), "--poni", "x.poni", "--modules", text])
    assert exc.value.code == 2
    assert f"--modules: {text!r}" in capsys.readouterr().err


def test_a_job_description_carries_the_modules_that_are_on(lambda_acq, tmp_path):
    """reintegrate --modules: the job's tasks and merge open the acquisition as integrate --modules does."""
    raw = _copy_without(lambda_acq, tmp_path, 3)
    (source,) = open_sources([raw], modules=(1, 2))
    spec = input_spec_for(source)
    assert spec.modules == (1, 2)
    job = JobSpec("20261207-150000-abcdef", "local", "a", spec, IntegrationSettings(lambda_acq.poni_path),
                  tmp_path / "a.nxs", tmp_path / "work", (FrameRange(0, 1, FRAMES, FRAMES),))  # fmt: skip
    again = JobSpec.from_dict(job.to_dict())
    assert again.input.modules == (1, 2)
    assert input_spec_for(open_sources([raw])[0]).modules is None  # all modules on: nothing to carry
    reopened = open_job_source(dataclasses.replace(again, data_roots=(str(raw),)))
    assert reopened.module_record()[:2] == ((1, 2), (3,))


def _corrupt_chunk(path, frame: int) -> None:
    """Replace one DEFLATE chunk by bytes that are no zlib stream (not a truncation)."""
    with h5py.File(path, "r+") as h5:
        ds = h5["entry/instrument/detector/data"]
        ds.id.write_direct_chunk((frame, 0, 0), bytes(range(7, 250)) * 3)


def test_the_live_read_keeps_the_good_frames_of_a_range_with_a_corrupt_one(tmp_path, small_poni):
    """Issue 17, item 4: one corrupt chunk costs its frame only, in the live path as offline."""
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1, frames_per_part=4)
    files = [f for f in acq["files"]]
    _corrupt_chunk(files[1], 2)  # module 2, frame index 2 = frame number 3
    batch = read_part_range(files, 0, 4)
    assert batch.frame_numbers.tolist() == [1, 2, 4] and batch.index_in_file.tolist() == [0, 1, 3]
    (failure,) = batch.read_failures
    assert failure.frame_numbers == [3] and "scan_00001_m2_part00000.nxs" in failure.reason
    engine = IntegrationEngine(IntegrationSettings(small_poni, bins=20), batch.frame_shape, batch.detector_mask)
    patterns = integrate_batch(engine, batch)
    assert patterns.frame_numbers.tolist() == [1, 2, 4]
    assert patterns.failed == [FailedFrames(str(files[0]), failure.reason, [3])]
    whole = read_part_range(files, 0, 2)  # a range without the corrupt frame reads as before
    np.testing.assert_array_equal(whole.frames, batch.frames[:2])
