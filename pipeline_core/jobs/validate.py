"""What may go into a job's commands and files: ids, names, Slurm options and paths, checked.

Commands are argument lists (never a shell), so a file name cannot inject a command; still, every
value that ends up on ``sbatch``'s command line or in a batch script is checked here against a
strict pattern, and a name that comes from the data (an acquisition stem) is made safe rather than
trusted: Slurm options parse ``--job-name=a --wrap=...`` as one value, but a newline in a script or
a ``%`` in an output pattern would still change what runs or where it writes.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from ..errors import PipelineError


class JobError(PipelineError):
    """A job cannot be submitted, found or cancelled; the message names the job or value and why."""


#: Our job ids: submission time + random, sortable, safe as a file name and on any command line.
JOB_ID_RE = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
#: Slurm partition, account and QOS names as sites write them.
SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
#: Slurm's --time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (or UNLIMITED).
TIME_LIMIT_RE = re.compile(r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2}|UNLIMITED)$")
#: characters kept in a job name taken from an acquisition stem (others become "_")
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_JOB_NAME = 64
MAX_CPUS_PER_TASK = 1024


def new_job_id() -> str:
    """A fresh job id: ``YYYYmmdd-HHMMSS-<6 hex>``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_job_id(job_id: object) -> str:
    """A job id as this layer writes them (it names a file in the state folder: no path may sneak in)."""
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise JobError(f"job id {job_id!r} is not a job id; expected YYYYmmdd-HHMMSS-xxxxxx as jobs lists them")
    return job_id


def job_name(stem: str, suffix: str = "") -> str:
    """A Slurm job name for an acquisition: ``xrd-<stem><suffix>``, unsafe characters replaced, bounded."""
    safe = _NAME_UNSAFE.sub("_", stem)[: MAX_JOB_NAME - 4 - len(suffix)]
    return f"xrd-{safe}{suffix}"


def check_slurm_name(value: str | None, what: str) -> str | None:
    """A partition, account or QOS name (None: not given, the cluster's default applies)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not SLURM_NAME_RE.match(value):
        raise JobError(f"slurm {what} {value!r} is not a Slurm name; expected letters, digits, _ . + - (at most 64)")
    return value


def check_time_limit(value: str) -> str:
    """A Slurm ``--time`` value."""
    if not isinstance(value, str) or not TIME_LIMIT_RE.match(value):
        raise JobError(
            f"slurm time limit {value!r} is not a Slurm time; expected MM, HH:MM:SS, D-HH:MM:SS or UNLIMITED"
        )
    return value


def check_count(value: object, what: str, lo: int, hi: int) -> int:
    """An integer option within bounds (bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise JobError(f"{what} {value!r} is out of range; expected an integer {lo} to {hi}")
    return value


def check_script_path(path: str | Path, what: str) -> Path:
    """An absolute path that may be written into a batch script or given to sbatch: no NUL, no newline,
    no ``%`` (sbatch expands it in --output patterns)."""
    text = str(path)
    if any(c in text for c in "\0\n\r%"):
        raise JobError(f"{what} {text!r} contains a NUL, newline or % character; expected a plain path")
    p = Path(text)
    if not p.is_absolute():
        raise JobError(f"{what} {text!r} is not an absolute path")
    return p
