"""The Stitcher's bounded queues as an operator sees them: their bounds (device properties) and depths.

A mixin for :class:`~tango_servers.stitcher.Stitcher` (which holds ``self.stage``, a
:class:`~pipeline_core.live.stitch_stage.StitchStage`). Every queue a client can fill is bounded, and its
depth is an attribute next to its bound, so an operator sees a queue filling before it refuses.
The defaults are :class:`~pipeline_core.live.stitch_stage.StitchConfig`'s: one place for each.
"""

from __future__ import annotations

from tango.server import attribute, device_property

from pipeline_core.live.stitch_stage import StitchConfig, StitchStage


class StitcherQueues:
    """Bounds of the announcement, reintegration, requeue and work-item queues, leases, and depths."""

    stage: StitchStage

    LeaseTimeout = device_property(
        dtype=float,
        default_value=StitchConfig.lease_s,
        doc="seconds a claimed item may stay unacknowledged before it is handed out again",
    )
    MaxPending = device_property(
        dtype=int, default_value=StitchConfig.max_pending, doc="bound of the announcement queue"
    )
    MaxReintegrations = device_property(
        dtype=int,
        default_value=StitchConfig.max_reintegrations,
        doc="reintegrations waiting to be queued as work; beyond it Reintegrate is refused",
    )
    MaxRequeues = device_property(
        dtype=int,
        default_value=StitchConfig.max_requeues,
        doc="RequeueFrames requests waiting; beyond it they are refused",
    )
    MaxItems = device_property(
        dtype=int,
        default_value=StitchConfig.max_items,
        doc="work items waiting for an Integrator; beyond it requeues and reintegrations are refused and "
        "complete parts wait on disk",
    )

    def queue_bounds(self) -> dict:
        """The bounds as :class:`StitchConfig` fields, for the stage the device builds."""
        return {
            "max_pending": self.MaxPending,
            "max_reintegrations": self.MaxReintegrations,
            "max_requeues": self.MaxRequeues,
            "max_items": self.MaxItems,
            "lease_s": self.LeaseTimeout,
        }

    def alarm(self) -> str | None:
        """ALARM at 80 % of a bound: the operator sees the queue filling before anything is refused."""
        pending = self.stage.pending_announcements
        if pending >= 0.8 * self.MaxPending:
            return (
                f"{pending} announcements waiting (bound {self.MaxPending}): the detector is faster than "
                "stitching; beyond the bound announcements are refused"
            )
        items = self.stage.queue_depth
        if items >= 0.8 * self.MaxItems:
            return (
                f"{items} work items waiting (bound MaxItems = {self.MaxItems}): the Integrators are behind; "
                "beyond the bound complete parts wait on disk and requeues/reintegrations are refused"
            )
        return None

    @attribute(
        dtype=int,
        label="Queue depth (announcements)",
        unit="",
        format="%d",
        min_value=0,
        doc="announcements waiting to be stitched (ALARM at 80 % of MaxPending, refused beyond it)",
    )
    def queueDepth(self) -> int:
        return self.stage.pending_announcements

    @attribute(
        dtype=int,
        label="Reintegrations waiting (acquisitions)",
        unit="",
        format="%d",
        min_value=0,
        doc="reintegrations accepted whose parts are not all queued as work yet (refused beyond MaxReintegrations)",
    )
    def reintegrationsPending(self) -> int:
        return self.stage.pending_reintegrations

    @attribute(
        dtype=int,
        label="Requeue requests waiting",
        unit="",
        format="%d",
        min_value=0,
        doc="RequeueFrames requests not yet handled (refused beyond MaxRequeues)",
    )
    def requeuesPending(self) -> int:
        return self.stage.pending_requeues

    @attribute(
        dtype=int,
        label="Work available (items)",
        unit="",
        format="%d",
        min_value=0,
        doc="work items waiting to be claimed by an Integrator (change events wake Integrators)",
    )
    def workAvailable(self) -> int:
        return self.stage.queue_depth

    @attribute(
        dtype=int,
        label="Items leased",
        unit="",
        format="%d",
        min_value=0,
        doc="work items claimed by Integrators and not yet acknowledged",
    )
    def itemsLeased(self) -> int:
        return self.stage.leased

    @attribute(
        dtype=int,
        label="Items handed out again",
        unit="",
        format="%d",
        min_value=0,
        doc="items re-queued after an expired lease or a Merger's request for missing frames",
    )
    def itemsRequeued(self) -> int:
        return self.stage.counters.items_requeued
