"""The chain as the pages see it: the last value of every watched attribute, fanned out to every page.

The server subscribes once per attribute (:class:`~..shared_events.SharedSubscriptions`) and keeps
the last value of each here; every page (a server-sent event stream) first gets that snapshot, then
each change as it comes. Events arrive on Tango's consumer thread: they are only stored and handed
to the server's event loop (``call_soon_threadsafe``), never processed there. A page whose queue
overflows (a stalled browser) is dropped; its EventSource reconnects and gets a fresh snapshot, so a
slow page never holds memory or delays the others.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from ..chain_names import ChainNames

#: attributes every device shows on the page
COMMON = ("State", "Status", "framesReceived", "framesProcessed", "framesFailed", "throughput", "latency",
          "upstreamConnected", "currentScan")
BY_ROLE = {
    "stitcher": ("queueDepth", "poniPath", "maskPath", "bins", "unit", "jobs"),
    "integrator": ("lastPattern", "radialAxis", "unit"),
    "merger": ("queueDepth", "currentOutputFile", "lastOutputFile", "outputDirectory"),
}
#: the Merger's pressure attributes: shown where the Merger has them (absent on older Mergers)
PRESSURE = ("pressure", "pressureSigma", "compressionRate", "pressureTrace")
#: messages a page may fall behind before it is dropped (it reconnects with a fresh snapshot)
QUEUE = 1000

Subscribe = Callable[[str, str, Callable[[str, str, Any, str], None]], None]


def jsonable(value: Any) -> Any:
    """A value JSON (and the browser's JSON.parse) takes: arrays as lists, NaN/inf as null."""
    if isinstance(value, np.ndarray):
        value = value.astype(np.float64) if value.dtype.kind in "fiub" else value
        if value.dtype.kind == "f":
            return [jsonable(v) for v in value.tolist()]
        return value.tolist()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LiveChain:
    """Last values of the chain's watched attributes, and the pages listening to them."""

    def __init__(self, chain: ChainNames, subscribe: Subscribe, has_attribute: Callable[[str, str], bool]):
        self.chain = chain
        self._subscribe = subscribe
        self._has = has_attribute
        self.values: dict[str, Any] = {}
        self.pages: set[asyncio.Queue] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        #: called (on the event thread) with (key, value) after each change: e.g. the scan reader
        self.on_change: list[Callable[[str, Any], None]] = []

    def watched(self) -> list[tuple[str, str]]:
        """(device, attribute) of everything the pages show; the pressure ones only where they exist."""
        pairs = []
        for device in self.chain.devices:
            role = self.chain.role(device)
            pairs += [(device, a) for a in (*COMMON, *BY_ROLE[role])]
            if role == "merger":
                pairs += [(device, a) for a in PRESSURE if self._has(device, a)]
        return pairs

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        for device, attribute in self.watched():
            self._subscribe(device, attribute, self._event)

    def _event(self, device: str, attribute: str, value: Any, error: str) -> None:
        key = f"{device}/{attribute}"
        if attribute == "jobs" and isinstance(value, str):
            value = json.loads(value or "[]")
        message = {"k": key, "v": jsonable(value), "e": error, "t": time.time()}
        self.publish(message)
        for hook in self.on_change:
            hook(key, value)

    def publish(self, message: dict) -> None:
        """Store ``message`` (a value under its key ``k``) and send it to every page, from any thread."""
        with self._lock:
            self.values[message["k"]] = message
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._fan_out, json.dumps(message))

    def _fan_out(self, text: str) -> None:
        for page in list(self.pages):
            try:
                page.put_nowait(text)
            except asyncio.QueueFull:
                self.pages.discard(page)  # its stream ends; the browser reconnects

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.values.values())

    async def stream(self, disconnected: Callable[[], Any]) -> AsyncIterator[str]:
        """One page's server-sent events: the snapshot, then every change, comments to keep it open."""
        page: asyncio.Queue = asyncio.Queue(QUEUE)
        self.pages.add(page)
        try:
            yield f"event: snapshot\ndata: {json.dumps(self.snapshot())}\n\n"
            while page in self.pages:
                try:
                    text = await asyncio.wait_for(page.get(), timeout=10)
                except asyncio.TimeoutError:
                    if await disconnected():
                        return
                    yield ": still here\n\n"
                    continue
                yield f"data: {text}\n\n"
        finally:
            self.pages.discard(page)
