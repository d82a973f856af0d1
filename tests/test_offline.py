import h5py
import numpy as np
import pyFAI
import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.formats.mask import save_mask_file
from pipeline_core.formats.nexus import read_merged
from pipeline_core.processing.integrate import IntegrationSettings
from pipeline_core.processing.offline import integrate_source
from pipeline_core.processing.sources import LambdaSource

from .helpers import REAL_STEM, SMALL_OFFSETS, dioptas_stitch, write_small_acquisition


def _reference_frames(directory, stem, n_parts):
    """Dioptas-stitched frames and the gap|pixel_mask mask, straight from h5py (no pipeline_core)."""
    frames, numbers = [], []
    for p in range(n_parts):
        per_module, offsets, masks = [], [], []
        for k in (1, 2, 3):
            with h5py.File(directory / f"{stem}_m{k}_part{p:05d}.nxs", "r") as h5:
                det = h5["entry/instrument/detector"]
                per_module.append(det["data"][()])
                offsets.append(tuple(det["translation/distance"][:2]))
                masks.append(
                    det["pixel_mask"][0] != 0 if "pixel_mask" in det else np.zeros(det["data"].shape[1:], bool)
                )
                if k == 1:
                    numbers.extend(det["sequence_number"][()].tolist())
        for i in range(per_module[0].shape[0]):
            frames.append(dioptas_stitch([m[i] for m in per_module], offsets))
    covered = dioptas_stitch([np.ones_like(m) for m in masks], offsets)
    mask = (covered == 0) | dioptas_stitch(masks, offsets)
    return frames, numbers, mask


def _assert_equal_to_pyfai(merged, frames, numbers, ai, mask, bins):
    m = read_merged(merged)
    rows = {int(n): i for i, n in enumerate(m["frame_number"])}
    assert set(numbers) <= set(rows)
    for number, frame in zip(numbers, frames, strict=True):
        i = rows[number]
        ref = ai.integrate1d(
            frame,
            bins,
            unit="2th_deg",
            method=("bbox", "csr", "cython"),
            mask=mask,
            polarization_factor=0.99,
            correctSolidAngle=True,
        )
        nz = ref.intensity != 0
        rel = np.abs(m["data"][i][nz] - ref.intensity[nz]) / np.abs(ref.intensity[nz])
        assert rel.max() <= 1e-5, f"frame {number}: max relative difference {rel.max()}"
        assert np.all(m["data"][i][~nz] == 0)
    np.testing.assert_allclose(m["binning"], ref.radial)


def test_real_p02_2_acquisition_end_to_end(real_dir, tmp_path):
    """The beamline's settings on the real files equal pyFAI on Dioptas-stitched, gap-masked frames."""
    poni = real_dir / "L2.poni"
    settings = IntegrationSettings(poni, bins=4038, unit="2th_deg")
    source = LambdaSource.from_file(real_dir / f"{REAL_STEM}_m2_part00003.nxs")
    report = integrate_source(source, settings, tmp_path / "out" / f"{REAL_STEM}.nxs", chunk_size=4)
    assert report.ok and report.frames_integrated == 50
    frames, numbers, mask = _reference_frames(real_dir, REAL_STEM, 5)
    assert numbers == list(range(1, 51))
    assert 0.15 < (mask.mean()) < 0.25
    _assert_equal_to_pyfai(report.output, frames[::7], numbers[::7], pyFAI.load(str(poni)), mask, 4038)
    m = read_merged(report.output)
    assert m["frame_number"].tolist() == numbers
    assert m["file_map"].tolist() == [0, 10, 20, 30, 40, 50]
    assert [f.rsplit("/", 1)[-1] for f in m["files"]] == [f"{REAL_STEM}_m1_part{p:05d}.nxs" for p in range(5)]
    assert m["pos_map"][13].tolist() == [1, 3]


@pytest.mark.parametrize("workers", [1, 2])
def test_small_acquisition_equals_pyfai_and_reintegration_gets_a_new_file(tmp_path, small_poni, workers):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3, frames_per_part=4)
    user_mask = np.zeros((67, 32), bool)
    user_mask[:5] = True
    save_mask_file(tmp_path / "user.edf", user_mask)
    settings = IntegrationSettings(small_poni, bins=40, mask_path=tmp_path / "user.edf")
    source = LambdaSource.from_file(acq["files"][0])
    report = integrate_source(source, settings, tmp_path / "scan.nxs", workers=workers, chunk_size=3)
    assert report.ok and report.frames_integrated == 12
    frames, numbers, mask = _reference_frames(tmp_path / "raw", acq["stem"], 3)
    _assert_equal_to_pyfai(report.output, frames, numbers, pyFAI.load(str(small_poni)), mask | user_mask, 40)

    first_bytes = report.output.read_bytes()
    again = integrate_source(LambdaSource.from_file(acq["files"][0]), settings.replace(bins=20), tmp_path / "scan.nxs")
    assert again.output.name == "scan_v001.nxs"
    assert report.output.read_bytes() == first_bytes
    assert read_merged(again.output)["data"].shape == (12, 20)


def test_bad_part_is_listed_and_the_rest_is_merged(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=3)
    broken = tmp_path / "raw" / f"{acq['stem']}_m2_part00001.nxs"
    broken.write_bytes(broken.read_bytes()[:2000])
    source = LambdaSource.from_file(acq["files"][0], retries=1, retry_delay_s=0.01)
    report = integrate_source(source, IntegrationSettings(small_poni, bins=10), tmp_path / "scan.nxs")
    assert not report.ok
    assert report.frames_integrated == 6 and report.frames_failed == 3
    m = read_merged(report.output)
    assert m["frame_number"].tolist() == [1, 2, 3, 7, 8, 9]
    assert m["failed_frames"] == ["4-6"] and broken.name in m["failed_reasons"][0]
    assert m["status"] == "incomplete"
    assert m["file_map"].tolist() == [0, 3, 3, 6]


def test_config_errors_come_before_any_output_file(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    save_mask_file(tmp_path / "wrong.npy", np.zeros((3, 3)))
    settings = IntegrationSettings(small_poni, bins=10, mask_path=tmp_path / "wrong.npy")
    with pytest.raises(ConfigError, match="wrong.npy has shape"):
        integrate_source(LambdaSource.from_file(acq["files"][0]), settings, tmp_path / "out" / "scan.nxs")
    assert not (tmp_path / "out" / "scan.nxs").exists()


def test_offsets_of_small_detector_fixture_are_the_lambda_pattern():
    # guards the fixture itself: module 2 and 3 shifted left by 2 columns, stacked with gaps
    assert SMALL_OFFSETS[1][0] == SMALL_OFFSETS[2][0] == -2.0


def test_a_simulate_folder_gives_one_acquisition_and_no_calibration_file_as_data(tmp_path):
    from pipeline_core.cli import main
    from pipeline_core.processing.sources import ImageSource, open_sources
    from pipeline_core.simulate import simulate_acquisition

    acq = simulate_acquisition(tmp_path / "raw", frames=4, frames_per_file=2)
    assert acq.mask_path.parent == acq.directory  # the mask EDF lies beside the module files
    (acq.directory / "beamstop.mask").write_bytes(b"dioptas mask")
    save_mask_file(acq.directory / "user_mask.tif", np.zeros((4, 4), bool))
    sources = open_sources([acq.directory])
    assert [type(s).__name__ for s in sources] == ["LambdaSource"] and sources[0].name == "ramp_00001"
    # images alone are data, except those named as masks and the --mask/--poni in use
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.npy", "b.npy", "dark_mask.npy", "cal.npy"):
        np.save(images / name, np.zeros((4, 4), np.int32))
    (images / "geometry.poni").write_text("Distance: 0.1\n")
    (sources,) = open_sources([images], calibration_files=[images / "cal.npy"])
    assert isinstance(sources, ImageSource) and [f.name for f in sources.files] == ["a.npy", "b.npy"]
    assert main(["integrate", str(acq.directory), "--poni", str(acq.poni_path), "--mask", str(acq.mask_path),
                 "--bins", "100", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ramp_00001.nxs"]
    m = read_merged(tmp_path / "out" / "ramp_00001.nxs")
    assert m["status"] == "complete" and m["frame_number"].tolist() == [1, 2, 3, 4]


class _HeldAfterFirstChunk(LambdaSource):
    """Yields its second and later chunks only once ``held`` is set (a reader slower than the stop)."""

    held = None

    def chunks(self, chunk_size, on_error):
        for i, batch in enumerate(super().chunks(chunk_size, on_error)):
            if i:
                self.held.wait(30)
            yield batch


def test_a_stopped_run_stays_part_and_interrupted(tmp_path, small_poni):
    import threading

    acq = write_small_acquisition(tmp_path / "raw", n_parts=3)
    stop = threading.Event()
    done = []

    def progress(n, failed):
        done.append(n)
        if n >= 3:
            stop.set()

    source = _HeldAfterFirstChunk(LambdaSource.from_file(acq["files"][0]).acquisition)
    source.held = stop  # the second chunk is read only once the stop is asked: the stop is met mid-run
    report = integrate_source(source, IntegrationSettings(small_poni, bins=10), tmp_path / "scan.nxs", chunk_size=3,
                              progress=progress, stop=stop)
    assert report.status == "interrupted" and report.output == tmp_path / "scan.nxs.part"
    assert report.frames_expected == 9 and report.frames_integrated == 3
    assert not (tmp_path / "scan.nxs").exists()
    m = read_merged(report.output)
    assert m["status"] == "interrupted" and m["frame_number"].tolist() == list(range(1, report.frames_integrated + 1))


def test_complete_only_when_every_announced_frame_is_there(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=2)
    source = LambdaSource.from_file(acq["files"][0])
    source.expected_frames = lambda: 8  # the files announce two frames the reader never gave
    report = integrate_source(source, IntegrationSettings(small_poni, bins=10), tmp_path / "scan.nxs")
    m = read_merged(report.output)
    assert report.status == m["status"] == "incomplete" and m["frame_number"].tolist() == list(range(1, 7))
    assert "announce 8 frames but only 6" in m["failed_reasons"][-1]


def test_frames_in_flight_stay_bounded_whatever_the_scan_length(small_poni):
    from pipeline_core.processing.integrate import IntegrationEngine
    from pipeline_core.processing.offline import (
        FRAME_MEMORY_BYTES,
        chunk_frames,
        frames_in_flight,
        release_build_memory,
    )

    stitched = 1833 * 1556 * 4  # bytes of one stitched Lambda 2M frame (int32 at most)
    as_decoded = 3 * 1556 * 516 * 2  # its three int16 module frames, as a Lambda chunk holds them
    for workers in (1, 2, 4):
        for frame in (stitched, as_decoded):
            assert frames_in_flight(workers, frame) * frame <= FRAME_MEMORY_BYTES == 128 * 2**20
    # int16 frames go in blocks of 8 (the csr engine's cheapest), 4-byte ones in 4s or 2s
    assert [chunk_frames(w, as_decoded) for w in (1, 2)] == [8, 8]
    assert [chunk_frames(w, stitched) for w in (1, 2)] == [4, 2]
    assert chunk_frames(1, as_decoded, most=3) == 3 and chunk_frames(8, stitched) == 1
    # freeing pyFAI's build-only arrays changes neither the result nor the engine in use
    # built here, not loaded from the session's engine store (a loaded engine has no pyFAI build to free)
    engine = IntegrationEngine(IntegrationSettings(small_poni, bins=10), (67, 32), engine_store=None)
    frame = np.arange(67 * 32, dtype=np.float32).reshape(67, 32)
    before = engine.integrate(frame).intensity
    sparse = [h.engine for h in engine.ai.engines.values()]
    release_build_memory(engine)
    np.testing.assert_array_equal(engine.integrate(frame).intensity, before)
    assert [h.engine for h in engine.ai.engines.values()] == sparse


def test_a_job_range_reads_the_chunks_integrate_reads(tmp_path):
    """A job's task (RangeSource) sizes its chunks by the frames as its Lambda source decodes them, as
    ``integrate`` does, not by a stitched 4-byte guess (which halved them)."""
    from pipeline_core.jobs.range_source import RangeSource
    from pipeline_core.jobs.spec import FrameRange
    from pipeline_core.processing.offline import chunk_frames

    acq = write_small_acquisition(tmp_path / "raw", n_parts=2, dtype=np.uint32)
    source = LambdaSource.from_file(acq["files"][0])
    source.prepare()
    ranged = RangeSource(LambdaSource.from_file(acq["files"][0]), FrameRange(0, 1, 3, 3, (0,)))
    ranged.prepare()
    assert source.frame_bytes() == ranged.frame_bytes() == source.layout.module_pixels * 4
    assert source.frame_bytes() < source.frame_shape[0] * source.frame_shape[1] * 4  # the gaps are not read
    lambda_2m = 3 * 1556 * 516 * 2  # int16 module frames
    assert chunk_frames(2, lambda_2m) == 8


def test_a_float64_stack_counts_8_bytes_a_pixel_for_the_frames_in_flight(tmp_path):
    """An HDF5 stack's frames take what its type takes: 8 bytes a pixel in float64, not the 4 assumed
    for other sources, so the chunks in flight stay within FRAME_MEMORY_BYTES."""
    from pipeline_core.processing.offline import FRAME_MEMORY_BYTES, chunk_frames, chunks_in_flight
    from pipeline_core.processing.sources import Hdf5Source

    sizes = {}
    for dtype in ("float64", "float32", "uint16"):
        path = tmp_path / f"{dtype}.h5"
        with h5py.File(path, "w") as h5:  # never written: only the shape and type are read
            h5.create_dataset("entry/data/data", shape=(24, 2000, 2000), dtype=dtype, chunks=(1, 2000, 2000))
        source = Hdf5Source([path])
        source.prepare()
        sizes[dtype] = source.frame_bytes()
    assert sizes == {"float64": 32_000_000, "float32": 16_000_000, "uint16": 8_000_000}
    assert [chunk_frames(2, sizes[d]) for d in ("float64", "float32", "uint16")] == [1, 2, 4]
    assert all(chunks_in_flight(2) * chunk_frames(2, b) * b <= FRAME_MEMORY_BYTES for b in sizes.values())

    # a later file of a wider type than the first's reads fewer frames a chunk: the bytes stay the same
    stack = Hdf5Source([tmp_path / "uint16.h5", tmp_path / "float64.h5"])
    stack.prepare()
    sizes_read = [len(batch.frame_numbers) for batch in stack.chunks(8, lambda failed: None)]
    assert sizes_read == [8] * 3 + [2] * 12, sizes_read


class _FailsAtOnce(LambdaSource):
    """A source whose ``chunks`` raises before it yields anything (not a generator)."""

    def chunks(self, chunk_size, on_error):
        raise ValueError("no reader for you")


def test_a_source_failing_before_its_first_chunk_ends_the_run_instead_of_hanging(tmp_path, small_poni):
    acq = write_small_acquisition(tmp_path / "raw", n_parts=1)
    source = _FailsAtOnce(LambdaSource.from_file(acq["files"][0]).acquisition)
    with pytest.raises(RuntimeError, match="crashed: ValueError\\('no reader for you'\\)"):
        integrate_source(source, IntegrationSettings(small_poni, bins=10), tmp_path / "scan.nxs", workers=2)
    assert read_merged(tmp_path / "scan.nxs.part")["status"] == "failed"
