"""Reintegration as jobs: an acquisition integrated again off the live chain, by a local process
pool (the default) or as a Slurm array job, into a new merged file.

Why a job layer: when the mask, PONI or bins change mid-beamtime, whole acquisitions (up to 31,000
frames) are integrated again. Pushing them through the live chain competes with the running scan
and stays on one node; a job runs elsewhere, and its result equals ``xrd-pipeline integrate`` on
the same input, row for row, because every range is integrated by
:func:`~pipeline_core.processing.offline.integrate_source` on the same frame path.

The pieces, one job each:

* :mod:`.spec` — the versioned :class:`~.spec.JobSpec` (settings, input, output, frame ranges),
  written as JSON in the job's work folder and beside the result for provenance;
* :mod:`.config` — :class:`~.config.JobsConfig`: backend, pool size, Slurm partition/account/time/CPUs,
  roots, state folder; :mod:`.validate` — ids, names and options checked (nothing injected);
* :mod:`.plan` — sources become jobs: paths confined, output name reserved, frames split in ranges
  (:mod:`.ranges`); :mod:`.source` — a job's acquisition opened again, as ``integrate`` opens it;
* :mod:`.range_source` — one range of an acquisition as a frame source;
* :mod:`.task` — ``python -m pipeline_core.jobs.task run|merge|fail WORK_DIR``: what every backend runs;
* :mod:`.merge` — the partial files of the ranges into the final file (temporary name, then moved);
  :mod:`.outcome` — a job ended as failed or cancelled: nothing left that looks like a result;
* :mod:`.workdir`, :mod:`.records` — the work folder and the records the tasks leave in it;
* :mod:`.store` — the job table on disk (what ``xrd-pipeline jobs`` and the Stitcher read);
* :mod:`.backend` — the interface; :mod:`.local` (+ :mod:`.local_runner`, :mod:`.slots`: the host's
  pool) and :mod:`.slurm` (+ :mod:`.slurm_commands`: sbatch, squeue, scontrol, sacct, scancel);
* :mod:`.manager` — submit/list/cancel/wait over every backend; :mod:`.watch` — the same for a
  long-running process (the Stitcher), off its command threads; :mod:`.commands` — the CLI.
"""
