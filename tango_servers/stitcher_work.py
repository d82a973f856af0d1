"""The Stitcher's work commands: Integrators claim items, Mergers ask for missing frames again, an
operator reintegrates an acquisition.

A mixin for :class:`~tango_servers.stitcher.Stitcher` (which holds ``self.stage``, a
:class:`~pipeline_core.live.stitch_stage.StitchStage`). Each command parses its versioned message (a
malformed one: XRD_InvalidValue naming the field) and forwards it; the stage's refusals become
XRD_QueueFull / XRD_InvalidValue with the stage's message, so a client sees which bound or value.
"""

from __future__ import annotations

from collections.abc import Callable

from tango import DispLevel
from tango.server import command

from pipeline_core.errors import PipelineError
from pipeline_core.live.stitch_stage import QueueFull, StitchStage
from pipeline_core.messages import ClaimRequest, MessageError, ReintegrateRequest, RequeueRequest

from .dev_failed import throw


class StitcherWork:
    """ClaimWork, RequeueFrames and Reintegrate."""

    stage: StitchStage

    @command(
        dtype_in=str,
        doc_in='JSON ClaimRequest {"type": "claim", "version": 1, "integrator": name, "settings": {...}, '
        '"done": [item ids]}',
        dtype_out=str,
        doc_out="JSON WorkItem, or empty string when there is no work",
        display_level=DispLevel.EXPERT,
    )
    def ClaimWork(self, request: str) -> str:
        """Hand the next work item to exactly one Integrator (a malformed request: XRD_InvalidValue)."""
        claim = _parse(ClaimRequest, request, "ClaimWork")
        had = self.stage.settings.current()
        item = self.stage.claim(claim)
        if had is None and self.stage.settings.current() is not None:  # the claimant's offer was adopted
            self.publisher.wake()  # type: ignore[attr-defined]
        return item.to_json() if item is not None else ""

    @command(
        dtype_in=str,
        doc_in='JSON RequeueRequest {"type": "requeue", "version": 1, "scan": id, "frames": [numbers], '
        '"raw_file": any file of the scan}',
        display_level=DispLevel.EXPERT,
    )
    def RequeueFrames(self, request: str) -> None:
        """Make work again for frames a Merger is missing (lost events, a killed Integrator). Returns at once."""
        r = _parse(RequeueRequest, request, "RequeueFrames")
        _forward(lambda: self.stage.requeue_frames(r.scan, r.frames, r.raw_file), "RequeueFrames")

    @command(
        dtype_in=str,
        doc_in="an acquisition file (any module/part) or its directory",
        dtype_out=str,
        doc_out="what was queued (ReintegrationBackend chain), or the id of the job submitted (local, slurm)",
    )
    def Reintegrate(self, path: str) -> str:
        """Reprocess an acquisition with the current settings into a new file. Returns at once: through the
        chain (ReintegrationBackend chain), or as a job (local, slurm: its id; see jobs)."""
        try:
            request = ReintegrateRequest.from_text(path)
        except MessageError as exc:
            throw("XRD_InvalidValue", f"Reintegrate: {exc}", "Stitcher.Reintegrate")
        if getattr(self, "reintegration_backend", "chain") != "chain":  # StitcherJobs
            return self.submit_reintegration(request.path)  # type: ignore[attr-defined]
        _forward(lambda: self.stage.reintegrate(request.path), "Reintegrate")
        return f"queued {path} for reintegration; watch framesProcessed on the Merger"


def _parse(message_type, text: str, command: str):
    """The command's argument as a validated message, or XRD_InvalidValue naming the field."""
    try:
        return message_type.from_json(text)
    except MessageError as exc:
        throw("XRD_InvalidValue", f"{command}: {exc}", f"Stitcher.{command}")


def _forward(call: Callable[[], None], command: str) -> None:
    """Run a stage call; its refusals become XRD_QueueFull / XRD_InvalidValue with the stage's message."""
    try:
        call()
    except QueueFull as exc:
        throw("XRD_QueueFull", str(exc), f"Stitcher.{command}")
    except PipelineError as exc:
        throw("XRD_InvalidValue", str(exc), f"Stitcher.{command}")
