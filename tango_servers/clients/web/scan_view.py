"""The heatmap of the current scan as it grows, for the pages: read from the Merger's file on its events.

A thread re-reads the Merger's ``currentOutputFile`` (its ``.part`` while open, without the writer's
lock) when the Merger says it merged more, at most every :data:`MIN_PERIOD_S`, and keeps one small
picture (at most :data:`MAX_ROWS` × :data:`MAX_COLS` bytes, sqrt-scaled): every page fetches that
same picture, so 20 pages cost one read of the file.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import numpy as np

from ..scan_so_far import ScanSoFar, read_scan_so_far
from .live import LiveChain

MIN_PERIOD_S = 0.5
MAX_ROWS, MAX_COLS = 600, 800


def picture(scan: ScanSoFar) -> dict[str, Any]:
    """The scan as 8-bit rows (frames) × columns (radial bins), binned down to the page's size."""
    image = np.sqrt(np.clip(np.nan_to_num(scan.data.astype(np.float64)), 0, None))
    rows, cols = image.shape
    row_step, col_step = -(-rows // MAX_ROWS), -(-cols // MAX_COLS)
    if row_step > 1 or col_step > 1:
        image = image[: rows - rows % row_step or None, : cols - cols % col_step or None]
        r, c = image.shape[0] // row_step, image.shape[1] // col_step
        image = image.reshape(r, row_step, c, col_step).mean(axis=(1, 3))
    lo, hi = np.percentile(image, [1, 99.8]) if image.size else (0.0, 1.0)
    scaled = np.clip((image - lo) / ((hi - lo) or 1.0), 0, 1)
    pixels = (scaled * 255).astype(np.uint8)
    return {
        "path": str(scan.path),
        "name": scan.path.name,
        "status": scan.status,
        "frames": len(scan.frame_number),
        "first_frame": int(scan.frame_number[0]) if len(scan.frame_number) else None,
        "last_frame": int(scan.frame_number[-1]) if len(scan.frame_number) else None,
        "axis": [float(scan.axis[0]), float(scan.axis[-1])] if len(scan.axis) else [0.0, 0.0],
        "axis_label": scan.axis_label,
        "height": int(pixels.shape[0]),
        "width": int(pixels.shape[1]),
        "pixels": base64.b64encode(pixels.tobytes()).decode(),
    }


class ScanView:
    """The current scan's picture, re-read on the Merger's events (``merger/framesProcessed`` …)."""

    def __init__(self, live: LiveChain):
        self.live = live
        self.merger = live.chain.merger
        self.scan: ScanSoFar | None = None
        self.picture: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xrd-web-scan", daemon=True)
        live.on_change.append(self._changed)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(5)

    def _changed(self, key: str, _value: Any) -> None:
        if key.startswith(self.merger + "/") and key.rsplit("/", 1)[1] in ("framesProcessed", "currentOutputFile"):
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            self.refresh()
            self._stop.wait(MIN_PERIOD_S)

    def refresh(self) -> None:
        message = self.live.values.get(f"{self.merger}/currentOutputFile") or {}
        scan = read_scan_so_far(str(message.get("v") or ""), self.scan)
        if scan is None or scan is self.scan or scan.data.size == 0:
            return  # nothing new, or a half-written moment: keep the last picture
        self.scan, self.picture = scan, picture(scan)
        summary = {k: self.picture[k] for k in ("name", "status", "frames", "first_frame", "last_frame")}
        self.live.publish({"k": "scan", "v": summary, "e": "", "t": 0})
