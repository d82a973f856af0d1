"""Change events of a chain, subscribed ONCE per attribute and fanned out to any number of listeners.

Twenty browsers watching the chain must cost the devices what one does: the web server subscribes
here once per (device, attribute) and every page is a listener in this process. Listeners run on
Tango's event consumer thread (one per process: a slow listener delays every other event), so they
must only hand the value on; an exception in one is logged and does not reach cppTango (which would
print and swallow it) nor the other listeners.

Subscriptions are *stateless*: a device that is down when the client starts, or restarts later, is
subscribed again by Tango by itself (about every 10 s); meanwhile the listeners get the error text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import tango

log = logging.getLogger(__name__)

#: (device, attribute, value or None, error text or "") -> None
Listener = Callable[[str, str, Any, str], None]


def event_value(event: tango.EventData) -> Any:
    """The value an event carries; a State as its name ("ON", "ALARM")."""
    value = event.attr_value.value
    return str(value) if isinstance(value, tango.DevState) else value


class SharedSubscriptions:
    """One change-event subscription per (device, attribute) of ``proxies``, fanned out to listeners."""

    def __init__(self, proxies: dict[str, tango.DeviceProxy]):
        self._proxies = proxies
        self._listeners: dict[tuple[str, str], list[Listener]] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Change-event subscriptions made on the devices (what the devices see of this client)."""
        return len(self._ids)

    def has_attribute(self, device: str, attribute: str) -> bool:
        """Whether ``device`` declares ``attribute`` (False when it does not answer)."""
        try:
            names = self._proxies[device].get_attribute_list()
        except tango.DevFailed:
            return False
        return attribute.lower() in {n.lower() for n in names}

    def listen(self, device: str, attribute: str, listener: Listener) -> None:
        """Give ``listener`` every change of ``device/attribute``, subscribing on the first listener only."""
        key = (device, attribute)
        with self._lock:
            first = key not in self._listeners
            self._listeners.setdefault(key, []).append(listener)
        if first:
            self._ids[key] = self._proxies[device].subscribe_event(
                attribute, tango.EventType.CHANGE_EVENT, lambda event: self._deliver(key, event), [], True
            )

    def _deliver(self, key: tuple[str, str], event: tango.EventData) -> None:
        if event.err:
            value, error = None, "; ".join(e.desc.strip() for e in event.errors) or "event error"
        else:
            value, error = event_value(event), ""
        with self._lock:
            listeners = list(self._listeners.get(key, ()))
        for listener in listeners:
            try:
                listener(*key, value, error)
            except Exception:
                log.exception("listener of %s/%s failed", *key)

    def close(self) -> None:
        """Undo every subscription (a proxy that no longer answers is skipped)."""
        for (device, _), event_id in list(self._ids.items()):
            try:
                self._proxies[device].unsubscribe_event(event_id)
            except tango.DevFailed:
                pass
        self._ids.clear()
        with self._lock:
            self._listeners.clear()
