"""The merge step: every range's partial file into the job's result, published only when all succeeded.

The result is written by the same :class:`~pipeline_core.formats.nexus.MergedFileWriter` that
``integrate`` uses, created with the whole acquisition's files, so rows (ordered by frame number),
``pos_map``/``file_map``, the failure list and the status are what ``integrate`` writes for the same
input: the partial files are slices of it. The writer writes under ``<output>.part`` (the name
reserved when the job was planned) and moves it to its final name (``publish``: never over an
existing file) only at the end; the job description goes beside it (``<stem>.job.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import h5py
import numpy as np

from ..errors import NoSpaceError, OutputError
from ..formats.nexus import MergedFileWriter
from ..formats.nexus_failures import FailureList
from ..formats.nexus_layout import open_layout, set_str
from ..formats.nexus_modules import record_modules
from ..messages import FailedFrames
from ..output import part_path
from ..processing.offline import check_all_frames_accounted
from ..signals import signals_deferred
from .outcome import failure_reason, finish_failed, retried_note
from .records import JobResult, write_json
from .source import open_job_source
from .spec import provenance_path
from .workdir import WorkDir

log = logging.getLogger(__name__)

#: what the partial files say about the engine that integrated them (``process/engine``), copied
ENGINE_FIELDS = ("engine", "engine_note")
#: rows copied at a time (a Lambda 2M pattern of 4038 bins is 16 kB: 8 MB per block)
BLOCK_ROWS = 512


def radial_axis(h5: h5py.File) -> np.ndarray:
    """The engine's radial axis as a merged file stores it: the default plot's axis (``binning`` for 2θ,
    ``q``/``d_spacing`` of ``result_q``/``result_d`` otherwise, which hold it unscaled)."""
    nxdata = h5["processed"][h5["processed"].attrs["default"]]
    axes = nxdata.attrs["axes"]
    return np.asarray(nxdata[axes[-1]][()], dtype=np.float64)


def _merge_failures(per_range: list[list[FailedFrames]]) -> list[FailedFrames]:
    """One failure list: a failure two ranges both report (a part they share, a file of unknown frames)
    is listed once, with the frames of both."""
    rows: list[FailedFrames] = []
    seen: dict[tuple[str, str], tuple[int, int]] = {}
    for k, failures in enumerate(per_range):
        for f in failures:
            key = (f.file, f.reason)
            if key in seen and seen[key][1] != k:
                i = seen[key][0]
                numbers = sorted(set(rows[i].frame_numbers) | set(f.frame_numbers))
                rows[i] = dataclasses.replace(rows[i], frame_numbers=numbers)
                continue
            seen[key] = (len(rows), k)
            rows.append(f)
    return rows


def _copy_rows(partial: Path, writer: MergedFileWriter) -> list[FailedFrames]:
    """Append the rows of one partial file to ``writer``; returns its failures."""
    with h5py.File(partial, "r") as h5:
        status = h5["processed/process/status"][()].decode()
        if status not in ("complete", "incomplete"):
            raise OutputError(f"partial result {partial} has status {status}; expected complete or incomplete")
        layout = open_layout(h5)
        n = int(layout.frame_number.shape[0])
        for start in range(0, n, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, n)
            pos = layout.pos_map[start:stop]
            writer.add(
                layout.frame_number[start:stop],
                layout.data[start:stop],
                None if layout.errors is None else layout.errors[start:stop],
                pos[:, 0],
                pos[:, 1],
            )
        return list(FailureList.read(layout.proc["failed"]).items)


def merge_job(work: WorkDir) -> JobResult:
    """Write the job's result from its partial files (every range must be done), publish it, and say so."""
    spec = work.spec()
    existing = work.result()
    if existing is not None:
        return existing
    records = [work.task(r.index) for r in spec.ranges]
    if any(record is None or record.state != "done" for record in records):
        return finish_failed(spec, work, failure_reason(spec, work))
    source = open_job_source(spec)
    with h5py.File(work.partial(0), "r") as h5:
        radial = radial_axis(h5)
        process = h5["processed/process"]
        recorded = {name: process[name][()].decode() for name in ENGINE_FIELDS if name in process}
    writer = MergedFileWriter(spec.output, radial, spec.settings, source.raw_files, source.input_files, source.name)
    try:
        for name, value in recorded.items():  # which engine integrated the rows, as integrate records it
            set_str(writer.h5["processed/process"], name, value)
        modules = source.module_record()
        if modules is not None:
            record_modules(writer.h5, *modules)
        per_range = [_copy_rows(work.partial(r.index), writer) for r in spec.ranges]
        failures = _merge_failures(per_range)
        for f in failures:
            writer.add_failure(f)
        check_all_frames_accounted(writer, source.name, source.expected_frames(), failures)
        with signals_deferred():
            final = writer.close()
    except BaseException:
        with contextlib.suppress(NoSpaceError):  # a full disk: the file goes anyway, the first error says why
            writer.suspend("interrupted")
        part_path(spec.output).unlink(missing_ok=True)  # a half merge is never left, even under the part name
        raise
    write_json(provenance_path(final), dataclasses.replace(spec, output=final).to_dict())
    failed = sum(max(1, len(f.frame_numbers)) for f in failures)
    state = "complete" if not failures else "incomplete"
    lost = "" if not failures else f"{failed} frame(s) could not be integrated: {failures[0].reason}"
    reason = "; ".join(filter(None, (lost, retried_note(spec, work))))  # a retried range is said, not hidden
    result = JobResult(state, str(final), int(writer.n_frames), failed, reason)
    work.remove_partials()
    work.write_result(result)
    log.info("job %s: %s (%d frames)", spec.job_id, final, writer.n_frames)
    return result
