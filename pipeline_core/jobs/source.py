"""A job's acquisition as a frame source: found again from its files, exactly as ``integrate`` finds it.

The job description names the files (:class:`~.spec.InputSpec`); every task and the merge open them
with :func:`~pipeline_core.processing.sources.open_sources`, the function ``integrate`` uses, after
confining each to the data roots (a job description is a file anyone with write access to the output
folder could edit).
"""

from __future__ import annotations

from pathlib import Path

from ..paths import confine
from ..processing.sources import FrameSource, Hdf5Source, ImageSource, LambdaSource, open_sources
from .spec import InputSpec, JobSpec
from .validate import JobError


def input_spec_for(source: FrameSource, dataset: str | None = None) -> InputSpec:
    """What a job records about ``source`` to open it again anywhere."""
    if isinstance(source, LambdaSource):
        acq = source.acquisition
        return InputSpec("lambda", tuple(source.input_files), modules=acq.modules if acq.modules_off else None)
    if isinstance(source, Hdf5Source):
        return InputSpec("hdf5", tuple(source.input_files), source.dataset or dataset)
    if isinstance(source, ImageSource):
        return InputSpec("image", tuple(source.input_files))
    raise JobError(f"{source.name}: a {type(source).__name__} cannot be reintegrated as a job")


def open_job_source(spec: JobSpec) -> FrameSource:
    """The acquisition of ``spec`` (its files confined to the job's data roots)."""
    for f in spec.input.files:  # checked resolved; opened by the names integrate gives them (the file records them)
        confine(f, spec.data_roots, "input file")
    files = list(spec.input.files)
    if spec.input.kind == "lambda":  # any one file finds the acquisition; a part's missing module is listed later
        files = [next((f for f in files if Path(f).exists()), files[0])]
    dataset = spec.input.dataset if spec.input.kind == "hdf5" else None
    sources = open_sources(paths=files, dataset=dataset, modules=spec.input.modules)
    if len(sources) != 1:
        raise JobError(
            f"job {spec.job_id}: its files make {len(sources)} acquisitions ({', '.join(s.name for s in sources)}); "
            "expected exactly one"
        )
    for f in sources[0].input_files:  # siblings found by name (a part written since) are checked too
        confine(f, spec.data_roots, "input file")
    return sources[0]
