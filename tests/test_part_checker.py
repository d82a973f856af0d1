"""The Stitcher's part check alone: small module files on disk in, a typed answer out (no stage)."""

import os

import numpy as np

from pipeline_core.formats.lambda_files import LambdaAcquisition, LambdaNaming
from pipeline_core.live.part_checker import PartChecker, PartFailed, PartReady, PartWaiting

from .helpers import SMALL_MODULE, SMALL_OFFSETS, write_module, write_small_acquisition


def test_a_complete_part_is_ready_with_its_frames_shape_mask_and_total(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=2, frames_per_part=3, record_total=True)
    checker = PartChecker(retries=0)
    state = checker.check(acq["files"][3:6])
    assert isinstance(state, PartReady)
    assert state.frame_numbers == [4, 5, 6] and state.total_frames == 6
    assert state.detector_mask is not None and state.detector_mask.shape == state.frame_shape
    again = checker.check(acq["files"][3:6], known_shape=state.frame_shape)
    assert isinstance(again, PartReady) and again.detector_mask is None  # the shape is known: no mask again


def test_a_part_with_a_module_not_written_waits_naming_it(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=1)
    acq["files"][2].unlink()
    state = PartChecker(retries=0).check(acq["files"])
    assert isinstance(state, PartWaiting) and state.missing == ["scan_00001_m3_part00000.nxs"]


def test_a_file_that_does_not_open_yet_waits_without_missing_files(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=1)
    path = acq["files"][1]
    path.write_bytes(path.read_bytes()[:2000])  # still being written
    state = PartChecker(retries=0).check(acq["files"])
    assert isinstance(state, PartWaiting) and state.missing == [] and "truncated" in state.reason


def test_modules_that_disagree_fail_with_module_ones_frames(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=1, frames_per_part=3)
    frames = np.ones((3, *SMALL_MODULE), np.int16)
    write_module(acq["files"][1], frames, SMALL_OFFSETS[1], first_number=7)  # other sequence numbers
    state = PartChecker(retries=0).check(acq["files"])
    assert isinstance(state, PartFailed) and "sequence numbers differ" in state.reason
    assert state.frame_numbers == [1, 2, 3]


def test_a_sibling_linking_out_of_the_roots_fails_and_only_files_inside_are_read(tmp_path):
    raw, outside = tmp_path / "raw", tmp_path / "outside"
    acq = write_small_acquisition(raw, n_parts=1)
    elsewhere = write_small_acquisition(outside, n_parts=1)
    acq["files"][2].unlink()
    os.symlink(elsewhere["files"][2], acq["files"][2])
    state = PartChecker(retries=0, roots=(str(raw),)).check(acq["files"])
    assert isinstance(state, PartFailed) and "outside the allowed root" in state.reason
    assert state.frame_numbers == [1, 2, 3]


def test_a_failure_lists_the_frames_of_whichever_file_still_opens(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=1, frames_per_part=2)
    acq["files"][0].write_bytes(b"not hdf5")
    failed = PartChecker(retries=0).failed(acq["files"], "given up")
    assert failed == PartFailed("given up", [1, 2])


def test_total_frames_and_readable_parts_of_an_acquisition(tmp_path):
    acq = write_small_acquisition(tmp_path, n_parts=3, frames_per_part=2, record_total=True)
    acq["files"][5].unlink()  # part 1 lacks module 3
    checker = PartChecker(retries=0)
    assert checker.total_frames(tmp_path, "scan_00001") == 6
    acquisition = LambdaAcquisition.from_stem(tmp_path, "scan_00001")
    parts = checker.readable_parts(acquisition, skip={2})
    assert {k: numbers for k, (_, numbers) in parts.items()} == {0: [1, 2]}


def test_lambda_naming_follows_the_file_it_was_learned_from(tmp_path):
    naming = LambdaNaming.from_name("scan_m01.nxs")
    assert naming == LambdaNaming(module_width=2, parts_suffix=False)
    assert naming.module_file(tmp_path, "scan", 3, 7) == tmp_path / "scan_m03.nxs"
    assert LambdaNaming.from_name("a_m2_part00004.nxs").module_file("/d", "a", 1, 5).name == "a_m1_part00005.nxs"
    assert LambdaNaming.from_name("scan_master.nxs") is None


def test_a_module_with_fewer_rows_fails_the_live_part_check(tmp_path):
    """Issue 17: the Stitcher refused no part whose module is shorter (its pixels would be misplaced)."""
    acq = write_small_acquisition(tmp_path, n_parts=1, frames_per_part=2)
    write_module(tmp_path / "scan_00001_m3_part00000.nxs", acq["modules"][3][0][:, 3:, :], SMALL_OFFSETS[2])
    state = PartChecker(retries=0).check(acq["files"])
    assert isinstance(state, PartFailed) and state.frame_numbers == [1, 2]
    assert f"scan_00001_m3_part00000.nxs {SMALL_MODULE[0] - 3} x {SMALL_MODULE[1]}" in state.reason
