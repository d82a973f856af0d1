"""The job commands of ``xrd-pipeline``: ``reintegrate`` and ``jobs``.

``reintegrate`` takes exactly ``integrate``'s options (its parser is built from integrate's, so an
option added there is here too) and resolves them with the same function
(:func:`~pipeline_core.cli.resolve_integrate_options`), so the settings and the output name are
those ``integrate`` would use; it submits a job per acquisition and prints each job's id at once,
or with ``--wait`` shows a progress bar and prints the result file like ``integrate``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..progress import Progress
from .config import CONFIG_ENV, JobsConfig, load_jobs_config
from .store import JobRecord

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2
#: seconds between two tables of ``jobs --watch``
WATCH_INTERVAL_S = 2.0


def add_job_commands(sub: Any) -> None:
    """Add ``reintegrate`` (integrate's options, plus --backend/--wait/--jobs-config) and ``jobs``."""
    integrate = sub.choices["integrate"]
    p = sub.add_parser(
        "reintegrate",
        parents=[integrate],
        add_help=False,
        help="integrate acquisitions again as jobs (local process pool or Slurm); returns the job ids at once",
        description="Integrate acquisitions again as jobs: same options and output naming as integrate.",
    )
    p.add_argument("--backend", choices=["local", "slurm"], help="where the job runs (default: the jobs config's)")
    p.add_argument("--wait", action="store_true", help="wait for the jobs, with a progress bar; print the result")
    _jobs_config_option(p)
    p = sub.add_parser("jobs", help="list reintegration jobs (id, backend, state, frames, output, reason)")
    p.add_argument("--watch", action="store_true", help="refresh every 2 s until no job is running")
    p.add_argument("--json", action="store_true", help="one JSON list instead of the table")
    p.add_argument("--cancel", metavar="ID", help="cancel this job (its partial files are removed)")
    _jobs_config_option(p)


def _jobs_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--jobs-config",
        type=Path,
        help=f"jobs configuration YAML: backend, pool size, Slurm options, roots, state folder (default ${CONFIG_ENV})",
    )


def jobs_config_for(args) -> JobsConfig:
    """The jobs configuration, with the roots of --config's beamtime when it sets none of its own."""
    import dataclasses

    config = load_jobs_config(args.jobs_config)
    beamtime = getattr(args, "config", None)
    if beamtime is not None and not (config.data_roots or config.output_roots):
        from ..config import load_config

        bt = load_config(beamtime)
        config = dataclasses.replace(config, data_roots=(str(bt.data_root),), output_roots=(str(bt.output_directory),))
    return config


def cmd_reintegrate(args) -> int:
    import dataclasses

    from ..cli import resolve_integrate_options
    from .manager import JobManager

    run = resolve_integrate_options(args)
    config = jobs_config_for(args)
    if args.workers is not None:  # --workers sizes the local pool, as it sizes integrate's threads
        config = dataclasses.replace(config, local=dataclasses.replace(config.local, workers=run.workers))
    manager = JobManager(config)
    records = manager.submit(
        args.sources, run.settings, run.output, backend=args.backend, dataset=run.dataset,
        engine=getattr(args, "engine", None),  # integrate's --engine, where this version has it
        modules=run.modules,
    )  # fmt: skip
    for record in records:
        print(
            f"{record.name}: job {record.job_id} submitted ({record.native_text()}, "
            f"{record.frames_total if record.frames_total is not None else '?'} frames); result {record.output}",
            file=sys.stderr,
        )
    if not args.wait:
        for record in records:
            print(record.job_id)
        return EXIT_OK
    status = EXIT_OK
    for record in records:
        progress = Progress(record.name, record.frames_total)

        def show(r: JobRecord, progress: Progress = progress) -> None:
            progress(r.frames_done, r.frames_failed)

        try:
            final = manager.wait(record.job_id, on_update=show)
        except KeyboardInterrupt:
            progress.close()
            print(
                f"{record.name}: stopped waiting; job {record.job_id} goes on "
                f"(xrd-pipeline jobs shows it, jobs --cancel {record.job_id} stops it)",
                file=sys.stderr,
            )
            raise
        progress.close()
        if final.state in ("complete", "incomplete"):
            print(final.output)
        print(
            f"{final.name}: job {final.job_id} {final.state}: {final.frames_done} frames integrated"
            + (f", {final.frames_failed} failed" if final.frames_failed else "")
            + (f"; {final.reason}" if final.reason else ""),
            file=sys.stderr,
        )
        if final.state != "complete":
            status = EXIT_FAILED
    return status


COLUMNS = ("ID", "BACKEND", "STATE", "FRAMES", "OUTPUT", "REASON")


def _frames(record: JobRecord) -> str:
    total = "?" if record.frames_total is None else str(record.frames_total)
    failed = f" ({record.frames_failed} failed)" if record.frames_failed else ""
    return f"{record.frames_done}/{total}{failed}"


def format_table(records: list[JobRecord]) -> str:
    """The jobs as a table: one line per job, columns aligned (the reason last, unclipped)."""
    rows = [COLUMNS] + [
        (r.job_id, r.native_text(), r.state, _frames(r), r.output, r.reason) for r in records
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def cmd_jobs(args) -> int:
    from .manager import JobManager

    manager = JobManager(jobs_config_for(args))
    if args.cancel:
        record = manager.cancel(args.cancel)
        print(f"job {record.job_id}: {record.state}" + (f" ({record.reason})" if record.reason else ""))
        return EXIT_OK
    while True:
        records = manager.list()
        if args.json:
            print(json.dumps([r.summary() for r in records]))
        elif records:
            print(format_table(records))
        else:
            print(f"no jobs in {manager.store.directory}")
        sys.stdout.flush()
        if not args.watch or all(r.ended for r in records):
            return EXIT_OK
        time.sleep(WATCH_INTERVAL_S)
        if not args.json:
            print()


JOB_COMMANDS = {"reintegrate": cmd_reintegrate, "jobs": cmd_jobs}
