"""A device's change-event subscriptions upstream: made without blocking, watched, and closed.

A pipeline device listens to the stage before it (the Stitcher to the detector, the Merger to the
Integrators). The upstream server may start after this one or restart, so a subscription must not
block ``init_device``, a link that does not deliver yet must show in Status without raising an
ALARM, and every subscription must be undone in ``delete_device``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import tango

log = logging.getLogger(__name__)

#: Event errors that mean "upstream not (yet) reachable": shown in Status, but not an ALARM.
TRANSIENT_EVENT_ERRORS = {
    "API_EventTimeout",
    "API_CantConnectToDevice",
    "API_DeviceNotExported",
    "API_ZmqFailed",
    "API_CorbaException",
    "API_DServerClassNotInitialised",  # upstream server still starting
}

EventHandler = Callable[[tango.EventData], None]


class EventSubscriptions:
    """The change-event subscriptions of one device and which of them do not deliver yet.

    ``on_error`` gets what went wrong in a callback or a non-transient event error (the device shows
    it in Status); ``on_fault`` gets why a subscription could not be made at all (the device cannot
    work without it).
    """

    def __init__(self, on_error: Callable[[str], None], on_fault: Callable[[str], None]):
        self._on_error = on_error
        self._on_fault = on_fault
        self._made: list[tuple[tango.DeviceProxy, int]] = []
        #: "trl/attr" -> why it does not deliver yet, for each link without a good event so far
        self._waiting: dict[str, str] = {}

    def subscribe(self, trl: str, attr: str, handler: EventHandler) -> None:
        """Subscribe to a change event upstream without blocking init (works before it is exported).

        Until the first good event arrives the link counts as not connected (``upstreamConnected``
        is False and Status says so): events pushed before that are not received, so a client that
        starts a scan should wait for it. Tango retries a failed subscription every ~10 s.
        """
        what = f"{trl}/{attr}"
        self._waiting[what] = f"subscribing to {what} ..."
        try:
            proxy = tango.DeviceProxy(trl)
            event_id = proxy.subscribe_event(
                attr, tango.EventType.CHANGE_EVENT, self.guarded(what, handler), sub_mode=tango.EventSubMode.AsyncRead
            )
        except tango.DevFailed as exc:  # e.g. a TRL the database does not know: the device cannot work
            self._on_fault(f"cannot subscribe to {what}: {exc.args[0].desc.strip()}")
            return
        self._made.append((proxy, event_id))

    def guarded(self, what: str, handler: EventHandler) -> EventHandler:
        """Wrap an event callback: errors are logged and shown in Status, never swallowed by cppTango."""

        def callback(event: tango.EventData) -> None:
            try:
                if event.err:
                    reason = event.errors[0].reason if event.errors else "unknown"
                    if reason in TRANSIENT_EVENT_ERRORS:  # upstream not up yet / restarting: Tango re-subscribes
                        self._waiting[what] = f"waiting for {what} ({reason}); Tango retries every ~10 s"
                    else:
                        self._on_error(f"{what}: event error {reason}")
                    return
                self._waiting.pop(what, None)
                handler(event)
            except Exception as exc:
                log.exception("%s callback failed", what)
                self._on_error(f"{what}: {exc}")

        return callback

    def mark_waiting(self, what: str, reason: str) -> None:
        """A link that is not a subscription (e.g. polling a detector) does not deliver: say why."""
        self._waiting[what] = reason

    def mark_delivering(self, what: str) -> None:
        self._waiting.pop(what, None)

    @property
    def connected(self) -> bool:
        """Every link has delivered a good event (or there is none)."""
        return not self._waiting

    def waiting(self) -> list[str]:
        """Why each link that has not delivered yet does not, for Status."""
        return sorted(self._waiting.values())

    def close(self) -> None:
        """Unsubscribe everything (``delete_device``); a server already gone is no error."""
        for proxy, event_id in self._made:
            try:
                proxy.unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._made.clear()
