"""How jobs run here: the backend, the local pool's size, the Slurm options, the roots, the state folder.

A small YAML file (``--jobs-config FILE`` or ``$XRD_PIPELINE_JOBS_CONFIG``; every key optional)::

    backend: local                 # local | slurm: what reintegrate uses without --backend
    state_directory: ~/.local/state/xrd-pipeline/jobs   # the job table (xrd-pipeline jobs reads it)
    frames_per_task: 2000          # a range per this many frames (one Lambda file), at least one per worker
    retries: 1                     # a failed range is tried again this many times, then the job fails
    data_roots: [/gpfs/current/raw]            # sources must lie here (empty: anywhere)
    output_roots: [/gpfs/current/processed]    # results (and work folders) must lie here
    calibration_roots: [/gpfs/current/processed/calib]   # PONI and mask files
    local:
      workers: 2                   # processes integrating at once on this host, over all local jobs
    slurm:
      partition: allcpu
      account: p02.2
      qos: null
      time_limit: "02:00:00"       # per task (sbatch --time)
      cpus_per_task: 4             # integration threads per task
      tasks: null                  # ranges of an array job (null: one per frames_per_task frames)
      max_parallel: null           # array tasks running at once (sbatch --array=0-N%max)
      python: /opt/xrd-pipeline/.venv/bin/python   # the interpreter on the compute nodes

Every problem is reported at once with its key, like the beamtime configuration.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .spec import BACKENDS, MAX_RANGES
from .validate import JobError, check_count, check_script_path, check_slurm_name, check_time_limit

DEFAULT_BACKEND = "local"
#: one Lambda file holds 2,000 frames: a range per file keeps each task's reads to its own files
DEFAULT_FRAMES_PER_TASK = 2000
MAX_LOCAL_WORKERS = 64
#: the file ``xrd-pipeline reintegrate``/``jobs`` read when no --jobs-config is given
CONFIG_ENV = "XRD_PIPELINE_JOBS_CONFIG"


def default_state_directory() -> Path:
    """``$XDG_STATE_HOME/xrd-pipeline/jobs`` (``~/.local/state/...``): one job table per user."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "xrd-pipeline" / "jobs"


@dataclass(frozen=True)
class LocalConfig:
    #: processes integrating at once on this host, whatever the number of local jobs
    workers: int = 1


@dataclass(frozen=True)
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    #: sbatch --time of each task and of the merge
    time_limit: str = "02:00:00"
    #: sbatch --cpus-per-task; also the integration threads of each task
    cpus_per_task: int = 1
    #: ranges (array tasks) of a job; None: one per ``frames_per_task`` frames
    tasks: int | None = None
    #: array tasks running at once (``--array=0-N%max``); None: as many as the cluster gives
    max_parallel: int | None = None
    #: the Python that runs the tasks on the compute nodes (this one by default)
    python: str = sys.executable


@dataclass(frozen=True)
class JobsConfig:
    backend: str = DEFAULT_BACKEND
    state_directory: Path = field(default_factory=default_state_directory)
    frames_per_task: int = DEFAULT_FRAMES_PER_TASK
    retries: int = 1
    data_roots: tuple[str, ...] = ()
    output_roots: tuple[str, ...] = ()
    calibration_roots: tuple[str, ...] = ()
    local: LocalConfig = field(default_factory=LocalConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_directory", Path(self.state_directory).expanduser())
        for name in ("data_roots", "output_roots", "calibration_roots"):
            object.__setattr__(self, name, tuple(str(Path(r).expanduser()) for r in getattr(self, name)))
        validate(self)


def validate(config: JobsConfig) -> None:
    """Refuse a configuration no job could run with (JobError naming the key and what was expected)."""
    if config.backend not in BACKENDS:
        raise JobError(f"backend {config.backend!r} is unknown; expected one of {', '.join(BACKENDS)}")
    check_count(config.frames_per_task, "frames_per_task", 1, 10_000_000)
    check_count(config.retries, "retries", 0, 10)
    check_count(config.local.workers, "local.workers", 1, MAX_LOCAL_WORKERS)
    s = config.slurm
    check_slurm_name(s.partition, "partition")
    check_slurm_name(s.account, "account")
    check_slurm_name(s.qos, "qos")
    check_time_limit(s.time_limit)
    check_count(s.cpus_per_task, "slurm.cpus_per_task", 1, 1024)
    if s.tasks is not None:
        check_count(s.tasks, "slurm.tasks", 1, MAX_RANGES)
    if s.max_parallel is not None:
        check_count(s.max_parallel, "slurm.max_parallel", 1, MAX_RANGES)
    check_script_path(s.python, "slurm.python")
    if any(c.isspace() for c in s.python):
        raise JobError(f"slurm.python {s.python!r} contains white space; a script's #! line cannot hold it")


_TOP = {f.name for f in fields(JobsConfig)}
_LOCAL = {f.name for f in fields(LocalConfig)}
_SLURM = {f.name for f in fields(SlurmConfig)}


def jobs_config_from_dict(data: Any, base_dir: str | Path = ".", origin: str = "<jobs config>") -> JobsConfig:
    """Validate a parsed configuration; relative paths resolve against ``base_dir``. ConfigError lists
    every problem, one per line (``origin: key: message``)."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of {', '.join(sorted(_TOP))}; got {type(data).__name__}")
    base = Path(base_dir)

    def unknown(where: str, given: dict, allowed: set[str]) -> None:
        for key in sorted(set(given) - allowed, key=str):
            problems.append(f"{origin}: {where}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")

    unknown("", data, _TOP)
    values: dict[str, Any] = {k: data[k] for k in _TOP & set(data) if k not in ("local", "slurm")}
    if "state_directory" in values:
        values["state_directory"] = _path(values["state_directory"], base)
    for name in ("data_roots", "output_roots", "calibration_roots"):
        if name in values:
            roots = values[name]
            if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
                problems.append(f"{origin}: {name}: {roots!r}; expected a list of directory paths")
                del values[name]
            else:
                values[name] = tuple(str(_path(r, base)) for r in roots)
    sections: dict[str, Any] = {}
    for name, allowed, klass in (("local", _LOCAL, LocalConfig), ("slurm", _SLURM, SlurmConfig)):
        block = data.get(name) or {}
        if not isinstance(block, dict):
            problems.append(f"{origin}: {name}: expected a mapping of {', '.join(sorted(allowed))}")
            continue
        unknown(f"{name}.", block, allowed)
        try:
            sections[name] = klass(**{k: v for k, v in block.items() if k in allowed})
        except TypeError as exc:
            problems.append(f"{origin}: {name}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return JobsConfig(**values, **sections)
    except (JobError, TypeError) as exc:
        raise ConfigError(f"{origin}: {exc}") from exc


def load_jobs_config(path: str | Path | None = None) -> JobsConfig:
    """The configuration in ``path``, else in ``$XRD_PIPELINE_JOBS_CONFIG``, else the defaults."""
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        if not env:
            return JobsConfig()
        path = env
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the jobs configuration ({exc})") from exc
    return jobs_config_from_dict(data, path.parent, str(path))


def _path(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{value!r} is not a path")
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()
