"""The job description: what to integrate, how, into what, split into which frame ranges.

One versioned value, :class:`JobSpec`, is written as ``spec.json`` in the job's work folder (every
task reads it there, on any node) and, once the result exists, beside it as ``<result>.job.json``:
the file says how it was made, with the very settings value the live chain uses
(:class:`~pipeline_core.processing.integrate.IntegrationSettings`). A reader refuses a version it
does not know instead of misreading it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..processing.integrate import IntegrationSettings
from .validate import JobError, check_job_id

JOB_SPEC_VERSION = 1
#: the largest frame number a detector writes (int32 sequence numbers)
MAX_FRAME_NUMBER = 2**31 - 1
#: ranges of one job (Slurm's default MaxArraySize is 1001)
MAX_RANGES = 1000
SOURCE_KINDS = ("lambda", "hdf5", "image")
BACKENDS = ("local", "slurm")


@dataclass(frozen=True)
class FrameRange:
    """Frames ``first``..``last`` (frame numbers, inclusive) of an acquisition, integrated by one task.

    ``parts``: indices of the acquisition's files (Lambda parts) the task reads; None = all of them
    (the task then keeps only the frames of its range). ``frames``: how many frames the files held
    in the range when the job was planned.
    """

    index: int
    first: int
    last: int
    frames: int
    parts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= MAX_FRAME_NUMBER:
            raise JobError(
                f"range {self.index}: frames {self.first}-{self.last} are not a frame range; expected "
                f"0 <= first <= last <= {MAX_FRAME_NUMBER}"
            )
        if self.parts is not None:
            object.__setattr__(self, "parts", tuple(int(p) for p in self.parts))

    def describe(self) -> str:
        """How an operator reads it in a reason: ``range 1 (frames 4-6)``."""
        return f"range {self.index} (frames {self.first}-{self.last})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "first": self.first,
            "last": self.last,
            "frames": self.frames,
            "parts": None if self.parts is None else list(self.parts),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FrameRange:
        return cls(int(data["index"]), int(data["first"]), int(data["last"]), int(data["frames"]), data.get("parts"))


@dataclass(frozen=True)
class InputSpec:
    """The acquisition: its files and how to read them (``open_sources`` finds the same source again)."""

    kind: str
    files: tuple[str, ...]
    dataset: str | None = None
    #: the Lambda modules that are on (``--modules``; None: every module)
    modules: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise JobError(f"input kind {self.kind!r} is unknown; expected one of {', '.join(SOURCE_KINDS)}")
        if not self.files:
            raise JobError("a job's input names no file")
        object.__setattr__(self, "files", tuple(str(f) for f in self.files))
        if self.modules is not None:
            if not self.modules or not all(type(m) is int and 1 <= m <= 99 for m in self.modules):
                raise JobError(f"input modules {self.modules!r}: expected module numbers 1 to 99")
            object.__setattr__(self, "modules", tuple(self.modules))


@dataclass(frozen=True)
class JobSpec:
    """Everything a task needs to integrate its range, and the merge to write the result."""

    job_id: str
    backend: str
    #: the acquisition's name (the source's), as in the result's title
    name: str
    input: InputSpec
    settings: IntegrationSettings
    #: the result's final name, reserved when the job was planned (``<output>.part`` exists)
    output: Path
    #: the job's work folder: records, partial files, logs (under the output's folder)
    work_dir: Path
    ranges: tuple[FrameRange, ...]
    #: frames the files announced when the job was planned (None: unknown)
    frames_total: int | None = None
    #: integration threads per task (``integrate_source(workers=...)``)
    threads: int = 1
    #: attempts of a range after the first one fails
    retries: int = 1
    #: ``integrate --engine`` (None: integrate_source's default)
    engine: str | None = None
    data_roots: tuple[str, ...] = ()
    output_roots: tuple[str, ...] = ()
    created: str = ""
    version: int = field(default=JOB_SPEC_VERSION)

    def __post_init__(self) -> None:
        check_job_id(self.job_id)
        if self.backend not in BACKENDS:
            raise JobError(f"backend {self.backend!r} is unknown; expected one of {', '.join(BACKENDS)}")
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "work_dir", Path(self.work_dir))
        object.__setattr__(self, "ranges", tuple(self.ranges))
        object.__setattr__(self, "data_roots", tuple(str(r) for r in self.data_roots))
        object.__setattr__(self, "output_roots", tuple(str(r) for r in self.output_roots))
        if not 1 <= len(self.ranges) <= MAX_RANGES:
            raise JobError(f"job {self.job_id}: {len(self.ranges)} frame ranges; expected 1 to {MAX_RANGES}")
        for i, r in enumerate(self.ranges):
            if r.index != i:
                raise JobError(f"job {self.job_id}: range {r.index} is at position {i}; ranges are numbered 0, 1, ...")
            if i and r.first <= self.ranges[i - 1].last:
                raise JobError(f"job {self.job_id}: {r.describe()} overlaps {self.ranges[i - 1].describe()}")

    def range(self, index: int) -> FrameRange:
        if not 0 <= index < len(self.ranges):
            raise JobError(f"job {self.job_id} has ranges 0 to {len(self.ranges) - 1}; no range {index}")
        return self.ranges[index]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "reintegration-job",
            "version": self.version,
            "job_id": self.job_id,
            "backend": self.backend,
            "name": self.name,
            "input": {
                "kind": self.input.kind,
                "files": list(self.input.files),
                "dataset": self.input.dataset,
                "modules": None if self.input.modules is None else list(self.input.modules),
            },
            "settings": self.settings.to_dict(),
            "output": str(self.output),
            "work_dir": str(self.work_dir),
            "ranges": [r.to_dict() for r in self.ranges],
            "frames_total": self.frames_total,
            "threads": self.threads,
            "retries": self.retries,
            "engine": self.engine,
            "data_roots": list(self.data_roots),
            "output_roots": list(self.output_roots),
            "created": self.created,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        if not isinstance(data, dict) or data.get("type") != "reintegration-job":
            raise JobError(f"not a reintegration job description: {str(data)[:80]!r}")
        if data.get("version") != JOB_SPEC_VERSION:
            raise JobError(
                f"job description version {data.get('version')!r} is not known here; expected {JOB_SPEC_VERSION}"
            )
        try:
            inp = data["input"]
            return cls(
                job_id=data["job_id"],
                backend=data["backend"],
                name=str(data["name"]),
                input=InputSpec(
                    inp["kind"], tuple(inp["files"]), inp.get("dataset"),
                    None if inp.get("modules") is None else tuple(inp["modules"]),
                ),  # fmt: skip
                settings=IntegrationSettings.from_dict(data["settings"]),
                output=Path(data["output"]),
                work_dir=Path(data["work_dir"]),
                ranges=tuple(FrameRange.from_dict(r) for r in data["ranges"]),
                frames_total=data.get("frames_total"),
                threads=int(data.get("threads", 1)),
                retries=int(data.get("retries", 1)),
                engine=data.get("engine"),
                data_roots=tuple(data.get("data_roots", ())),
                output_roots=tuple(data.get("output_roots", ())),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise JobError(f"job description of {data.get('job_id')!r} is damaged ({exc!r})") from exc

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobError(f"job description is not JSON ({exc})") from exc
        return cls.from_dict(data)

    @classmethod
    def read(cls, path: str | Path) -> JobSpec:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise JobError(f"job description {path} cannot be read ({exc})") from exc
        return cls.from_json(text)


def provenance_path(result: str | Path) -> Path:
    """Where a result's job description is kept: ``<stem>.job.json`` beside ``<stem>.nxs``."""
    result = Path(result)
    return result.with_name(f"{result.stem}.job.json")
