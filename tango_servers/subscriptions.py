"""A device's change-event subscriptions upstream: made without blocking, watched, and closed.

A pipeline device listens to the stage before it (the Stitcher to the detector, the Merger to the
Integrators). The upstream server may start after this one or restart, so a subscription must not
block ``init_device``, a link that does not deliver shows in Status (an ALARM only once it has been
out longer than ``UpstreamAlarmAfter``: see :class:`~.status_log.UpstreamLinks`), and every
subscription must be undone in ``delete_device``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import tango

from .dev_failed import one_line, unreachable
from .status_log import UpstreamLinks

log = logging.getLogger(__name__)

EventHandler = Callable[[tango.EventData], None]


class EventSubscriptions:
    """The change-event subscriptions of one device, and its links upstream that do not deliver now.

    ``on_error`` gets what went wrong in a callback or an event error that is not about reaching
    upstream (the device shows it in Status, ALARM until acknowledged); ``on_fault`` gets why a
    subscription could not be made at all (the device cannot work without it). ``links`` holds
    which links are out, since when, and notes of those that came back.
    """

    def __init__(
        self, on_error: Callable[[str], None], on_fault: Callable[[str], None], links: UpstreamLinks | None = None
    ):
        self._on_error = on_error
        self._on_fault = on_fault
        self._made: list[tuple[tango.DeviceProxy, int]] = []
        self.links = links or UpstreamLinks()

    def subscribe(self, trl: str, attr: str, handler: EventHandler) -> None:
        """Subscribe to a change event upstream without blocking init (works before it is exported).

        Until the first good event arrives the link counts as not connected (``upstreamConnected``
        is False and Status says so): events pushed before that are not received, so a client that
        starts a scan should wait for it. Tango retries a failed subscription every ~10 s.
        """
        what = f"{trl}/{attr}"
        self.links.lost(what, "subscribing ...")
        try:
            proxy = tango.DeviceProxy(trl)
            event_id = proxy.subscribe_event(
                attr, tango.EventType.CHANGE_EVENT, self.guarded(what, handler), sub_mode=tango.EventSubMode.AsyncRead
            )
        except tango.DevFailed as exc:  # e.g. a TRL the database does not know: the device cannot work
            self.links.forget(what)
            self._on_fault(f"cannot subscribe to {what}: {exc.args[0].desc.strip()}")
            return
        self._made.append((proxy, event_id))

    def guarded(self, what: str, handler: EventHandler) -> EventHandler:
        """Wrap an event callback: errors are logged and shown in Status, never swallowed by cppTango."""

        def callback(event: tango.EventData) -> None:
            try:
                if event.err:
                    self._event_error(what, event.errors)
                    return
                self.links.regained(what)
                handler(event)
            except Exception as exc:
                log.exception("%s callback failed", what)
                self._on_error(f"{what}: {exc}")

        return callback

    def _event_error(self, what: str, errors) -> None:
        if unreachable(errors):  # upstream not up yet / restarting / hung
            self.links.lost(what, f"{one_line(errors)}; Tango re-subscribes every ~10 s")
        else:
            self._on_error(f"{what}: event error {one_line(errors)}")

    def mark_waiting(self, what: str, reason: str) -> None:
        """A link that is not a subscription (polling a detector, claiming work) does not deliver: say why."""
        self.links.lost(what, reason)

    def mark_delivering(self, what: str) -> None:
        self.links.regained(what)

    def forget(self, what: str) -> None:
        """A link no longer used (e.g. an Integrator stopped claiming): not out, and no note."""
        self.links.forget(what)

    @property
    def connected(self) -> bool:
        """Every link delivers (or there is none)."""
        return self.links.connected

    def waiting(self) -> list[str]:
        """Why each link that does not deliver now does not, for Status."""
        return self.links.waiting()

    def close(self) -> None:
        """Unsubscribe everything (``delete_device``); a server already gone is no error."""
        for proxy, event_id in self._made:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._made.clear()
