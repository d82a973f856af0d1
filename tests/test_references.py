"""Live results against references that are not our code.

The live chain (stitch → integrate → merge stages) must give, row for row, what pyFAI's own
``integrate1d`` gives on frames stitched by the Dioptas rule written out in the test, with the mask
the README promises (module gaps + the files' ``pixel_mask`` + the user's mask). The merged file is
read back with h5py, not with our reader, so neither side of the comparison goes through the
pipeline's integration, stitching or file code.
"""

import h5py
import numpy as np
import pyFAI

from pipeline_core.formats.mask import save_mask_file
from pipeline_core.live.integrate_stage import IntegrateStage
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.live.stitch_stage import StitchConfig, StitchStage
from pipeline_core.live.work_source import InProcessWorkSource
from pipeline_core.messages import PatternBatch
from pipeline_core.processing.integrate import IntegrationSettings

from .helpers import SMALL_FRAME, SMALL_MODULE, SMALL_OFFSETS, dioptas_stitch, wait_for, write_module

BINS = 40


def _write_acquisition(directory, n_parts=2, frames_per_part=3):
    """Module files with flagged pixels; returns the module frames and pixel masks the test wrote."""
    rng = np.random.default_rng(7)
    directory.mkdir()
    flags = [np.zeros(SMALL_MODULE, np.uint32) for _ in range(3)]
    for flag in flags:
        flag[rng.integers(0, SMALL_MODULE[0], 5), rng.integers(0, SMALL_MODULE[1], 5)] = 2  # hot pixels
    modules = {k: [] for k in range(3)}
    for p in range(n_parts):
        for k, offset in enumerate(SMALL_OFFSETS):
            frames = rng.poisson(200, size=(frames_per_part, *SMALL_MODULE)).astype(np.int16)
            frames[:, flags[k] != 0] = 4095  # what a hot pixel reads: must never reach a pattern
            modules[k].append(frames)
            write_module(
                directory / f"scan_00001_m{k + 1}_part{p:05d}.nxs",
                frames,
                offset,
                1 + p * frames_per_part,
                pixel_mask=flags[k],
                total_frames=n_parts * frames_per_part,
            )
    return [np.concatenate(modules[k]) for k in range(3)], flags


def _run_chain(tmp_path, settings, files):
    """Stitch → one Integrator → merge with plain callbacks and the stages' default timings."""
    closed, errors = [], []
    merge = MergeStage(tmp_path / "out", closed.append, errors.append)
    stitch = StitchStage(
        StitchConfig(frames_per_item=2),  # several items per part: rows come from different items
        on_scan=merge.scan_started,
        on_work=lambda n: integrator.wake(),
        on_error=errors.append,
    )

    def forward(batch: PatternBatch):
        merge.add_batch(PatternBatch.decode(*batch.encode()))  # through the wire format

    integrator = IntegrateStage("int0", settings, InProcessWorkSource(stitch), forward,
                                errors.append)
    integrator.start()
    try:
        for f in files:
            stitch.announce(str(f))
        wait_for(lambda: len(closed) == 1, 60, "the merged file")
    finally:
        integrator.stop()
        stitch.stop()
        merge.stop()
    assert errors == []
    return closed[0].path


def test_live_rows_equal_pyfai_integrate1d_on_dioptas_stitched_frames(tmp_path, small_poni):
    modules, flags = _write_acquisition(tmp_path / "raw")
    user = np.zeros(SMALL_FRAME, bool)
    user[:, :4] = True  # a beamstop shadow
    save_mask_file(tmp_path / "user.edf", user)
    settings = IntegrationSettings(small_poni, bins=BINS, mask_path=tmp_path / "user.edf")
    files = sorted((tmp_path / "raw").glob("*.nxs"))
    merged = _run_chain(tmp_path, settings, files)

    with h5py.File(merged, "r") as h5:
        rows = h5["processed/result/data"][()]
        numbers = h5["processed/result/frame_number"][()]
        binning = h5["processed/result/binning"][()]
        status = h5["processed/process/status"][()].decode()
    assert numbers.tolist() == [1, 2, 3, 4, 5, 6] and status == "complete"

    gaps = dioptas_stitch([np.ones(SMALL_MODULE, np.uint8)] * 3, SMALL_OFFSETS) == 0
    hot = dioptas_stitch([f != 0 for f in flags], SMALL_OFFSETS)
    mask = gaps | hot | user
    assert gaps.sum() > 0 and hot.sum() >= 10
    ai = pyFAI.load(str(small_poni))
    for i, row in enumerate(rows):
        frame = dioptas_stitch([m[i] for m in modules], SMALL_OFFSETS)
        ref = ai.integrate1d(
            frame, BINS, unit="2th_deg", method=("bbox", "csr", "cython"), mask=mask,
            polarization_factor=0.99, correctSolidAngle=True,
        )
        np.testing.assert_allclose(binning, ref.radial, rtol=1e-12)
        assert np.count_nonzero(ref.intensity) > BINS // 2
        assert np.max(np.abs(row - ref.intensity)) <= 1e-5 * np.max(ref.intensity), f"frame {numbers[i]}"
        # the tolerance is tight enough to see the mask: without the hot pixels' flags pyFAI differs by far more
        unflagged = ai.integrate1d(frame, BINS, mask=gaps | user, polarization_factor=0.99).intensity
        assert np.max(np.abs(row - unflagged)) > 100 * 1e-5 * np.max(ref.intensity)

