"""From command-line paths to planned jobs: one per acquisition, checked, named, split — nothing run yet.

Everything that can be refused is refused here, before anything is submitted: a source or output
outside the configured roots, files that do not open, a PONI or mask that is unusable or lies
outside the calibration roots, a mask of the wrong shape. The output is named as ``integrate``
names it (``<stem>.nxs`` in the output folder, or the ``.nxs`` given) and its ``_vNNN`` is reserved
now (``<name>.part`` created exclusively), so two jobs, or a job and a live scan, never pick the
same name, and the name printed at submission is the result's.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from ..errors import PipelineError
from ..live.chain_settings import check_settings
from ..output import part_path, reserve_output
from ..paths import confine
from ..processing.integrate import IntegrationSettings
from ..processing.sources import FrameSource, open_sources
from .config import JobsConfig
from .ranges import frame_layout, plan_ranges
from .records import now_iso
from .source import input_spec_for
from .spec import JobSpec
from .validate import new_job_id
from .workdir import WorkDir, reservation_text, work_dir_for


def output_name(output: Path, source: FrameSource) -> Path:
    """``integrate``'s naming: the ``.nxs`` given, else ``<folder>/<acquisition>.nxs``."""
    return output if output.suffix == ".nxs" else output / f"{source.name}.nxs"


def absolute_settings(settings: IntegrationSettings) -> IntegrationSettings:
    """The settings with absolute PONI and mask paths: a job's tasks run in other folders, on other hosts."""
    mask = None if settings.mask_path is None else Path(settings.mask_path).absolute()
    return settings.replace(poni_path=Path(settings.poni_path).absolute(), mask_path=mask)


def open_checked_sources(
    paths: Sequence[str | Path],
    settings: IntegrationSettings,
    config: JobsConfig,
    dataset: str | None = None,
    modules: Sequence[int] | None = None,
) -> list[FrameSource]:
    """The acquisitions of ``paths`` (as ``integrate`` groups them), each prepared and confined."""
    for p in paths:
        confine(p, config.data_roots, "source")
    check_settings(settings, roots=config.calibration_roots)
    calibration = [settings.poni_path] + ([settings.mask_path] if settings.mask_path else [])
    sources = open_sources(paths=list(paths), dataset=dataset, calibration_files=calibration, modules=modules)
    for source in sources:
        for f in source.input_files:
            confine(f, config.data_roots, "input file")
        source.prepare()
        check_settings(settings, frame_shape=source.frame_shape, roots=config.calibration_roots)
    return sources


def plan_job(
    source: FrameSource,
    settings: IntegrationSettings,
    output: Path,
    config: JobsConfig,
    backend: str,
    ranges_wanted: int | None,
    threads: int = 1,
    dataset: str | None = None,
    engine: str | None = None,
) -> JobSpec:
    """Reserve the result's name, create the work folder and write the job description.

    ``ranges_wanted``: a function of the frame count decides when None (see Backend.ranges_for)."""
    target = output_name(Path(output), source)
    confine(target, config.output_roots, "output")  # the name itself never reaches a command line or a script
    layout = frame_layout(source)
    expected = source.expected_frames()
    total = expected if expected is not None else (layout.total if layout is not None else None)
    ranges = plan_ranges(layout, ranges_wanted or 1)
    job_id = new_job_id()
    reserved = reserve_output(Path(target).absolute())
    work = WorkDir(work_dir_for(reserved, job_id))
    try:
        part_path(reserved).write_bytes(reservation_text(job_id))  # whose reservation it is (see release)
        work.path.mkdir(parents=True)
        spec = JobSpec(
            job_id=job_id,
            backend=backend,
            name=source.name,
            input=input_spec_for(source, dataset),
            settings=settings,
            output=reserved,
            work_dir=work.path,
            ranges=tuple(ranges),
            frames_total=total,
            threads=threads,
            retries=config.retries,
            engine=engine,
            data_roots=config.data_roots,
            output_roots=config.output_roots,
            created=now_iso("microseconds"),  # orders jobs planned within one second (the job table's order)
        )
        work.write_spec(spec)
    except BaseException:
        discard(reserved, work)
        raise
    return spec


def discard(reserved: Path, work: WorkDir) -> None:
    """Undo a plan that was not submitted: the name given back, the work folder removed."""
    part_path(reserved).unlink(missing_ok=True)
    shutil.rmtree(work.path, ignore_errors=True)
    try:
        work.path.parent.rmdir()
    except OSError:
        pass


def check_one_output(output: Path, sources: list[FrameSource]) -> None:
    if Path(output).suffix == ".nxs" and len(sources) > 1:
        raise PipelineError(f"{len(sources)} acquisitions given but one output file {output}; give a directory")
