"""Slurm's commands as argument lists: ``sbatch``, ``squeue``, ``scontrol``, ``sacct``, ``scancel``.

Never a shell: each call is ``subprocess.run([...])`` with a timeout, and its output is parsed from
the machine-readable forms (``sbatch --parsable``, ``squeue -o`` with our own separator). Which
cluster is asked is Slurm's business (``SLURM_CONF``, the PATH): the same code runs against the
one-node cluster of ``scripts/slurm_local.sh`` and a facility's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from .validate import JobError

#: seconds any Slurm command may take (a busy controller answers within seconds)
COMMAND_TIMEOUT_S = 30.0
#: states in which a job (or array task) may still run
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"}
)


#: seconds the controller gets to answer ``scontrol ping`` in :func:`cluster_problem`
PING_TIMEOUT_S = 10.0


def slurm_available() -> bool:
    """Whether ``sbatch`` is on the PATH (the Slurm backend needs it)."""
    return shutil.which("sbatch") is not None


def cluster_problem() -> str | None:
    """Why no Slurm job can be submitted from here, or None when a controller answers.

    Installed commands are not a cluster: without a ``slurm.conf`` (``SLURM_CONF``) every command
    fails with "Could not establish a configuration source"; with one whose slurmctld is down, it
    times out. Asked once by whoever must know before submitting (the Slurm tests)."""
    if not slurm_available():
        return "Slurm's commands are not installed (no sbatch on the PATH)"
    try:
        proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=PING_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"no Slurm controller answered 'scontrol ping' within {PING_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return f"scontrol cannot be run ({exc})"
    if proc.returncode != 0 or " is UP" not in proc.stdout:
        return f"no Slurm controller answers 'scontrol ping' ({_message(proc)})"
    return None


@dataclass(frozen=True)
class SlurmJob:
    """One line of ``squeue``: a job, an array task, or an array's pending tasks together."""

    job_id: int  # the array's id for array tasks (%F)
    tasks: tuple[int, ...]  # array task ids (empty for a plain job)
    state: str
    reason: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def describe(self) -> str:
        reason = "" if self.reason in ("None", "") else f", {self.reason}"
        return f"Slurm state {self.state}{reason}"


def _run(args: list[str]) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise JobError(f"{args[0]} is not on the PATH: the slurm backend needs Slurm's commands on this host")
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise JobError(f"{args[0]} did not answer within {COMMAND_TIMEOUT_S:.0f} s (is slurmctld up?)") from exc
    except OSError as exc:
        raise JobError(f"{args[0]} cannot be run ({exc})") from exc


def _message(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


def sbatch(options: list[str], script: str, script_args: list[str]) -> int:
    """Submit ``script`` with ``options``; the new job's id."""
    proc = _run(["sbatch", "--parsable", *options, script, *script_args])
    if proc.returncode != 0:
        raise JobError(f"sbatch refused the job: {_message(proc)}")
    first = proc.stdout.strip().split(";")[0]
    if not first.isdigit():
        raise JobError(f"sbatch answered {proc.stdout.strip()!r}; expected a job id")
    return int(first)


_TASKS_RE = re.compile(r"^[\d,\-]+")


def _tasks(text: str) -> tuple[int, ...]:
    """``3`` / ``0-2`` / ``[0-4%2]`` / ``0,3-5`` → the task ids; ``N/A`` → none."""
    match = _TASKS_RE.match(text.strip("[]"))
    if not match:
        return ()
    ids: list[int] = []
    for piece in filter(None, match.group().split(",")):
        first, _, last = piece.partition("-")
        ids.extend(range(int(first), int(last or first) + 1))
    return tuple(ids)


def squeue(job_ids: list[int]) -> list[SlurmJob] | None:
    """What Slurm knows of these jobs, finished ones it still remembers included; None when it
    knows none of them (ended long ago, or never existed)."""
    if not job_ids:
        return None
    args = ["squeue", "-h", "-t", "all", "-j", ",".join(map(str, job_ids)), "-o", "%F|%K|%T|%r"]
    proc = _run(args)
    if proc.returncode != 0:
        if "Invalid job id" in (proc.stderr or ""):
            return None
        raise JobError(f"squeue failed: {_message(proc)}")
    jobs = []
    for line in proc.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[0].isdigit():
            continue
        jobs.append(SlurmJob(int(fields[0]), _tasks(fields[1]), fields[2], fields[3]))
    return jobs or None


def scontrol_state(job_id: int) -> str | None:
    """``JobState`` and ``ExitCode`` of one (plain) job from ``scontrol show job``, or None if unknown."""
    proc = _run(["scontrol", "-o", "show", "job", str(job_id)])
    if proc.returncode != 0:
        return None
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
    state = fields.get("JobState")
    return None if state is None else f"Slurm state {state} (exit code {fields.get('ExitCode', '?')})"


def sacct_states(job_ids: list[int]) -> dict[str, str]:
    """``sacct``'s state per job (``1234``, ``1234_5``) where accounting is on; empty where it is off."""
    if shutil.which("sacct") is None or not job_ids:
        return {}
    proc = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(map(str, job_ids)), "-o", "JobID,State,ExitCode"])
    if proc.returncode != 0:  # "Slurm accounting storage is disabled" on clusters without it
        return {}
    found = {}
    for line in proc.stdout.splitlines():
        fields = line.split("|")
        if len(fields) == 3:
            found[fields[0]] = f"Slurm state {fields[1]} (exit code {fields[2]})"
    return found


def scancel(job_ids: list[int]) -> None:
    """Cancel these jobs (unknown or ended ones are ignored by Slurm)."""
    if not job_ids:
        return
    proc = _run(["scancel", *map(str, job_ids)])
    if proc.returncode != 0 and "Invalid job id" not in (proc.stderr or ""):
        raise JobError(f"scancel failed: {_message(proc)}")
