"""A one-line progress display for terminals (no dependency; silent when not on a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None, min_interval_s: float = 0.2):
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.min_interval_s = min_interval_s

    def __call__(self, done: int, failed: int = 0) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self._last < self.min_interval_s:
            return
        self._last = now
        rate = done / (now - self.t0) if now > self.t0 else 0.0
        if self.total:
            width = 30
            filled = min(width, int(width * (done + failed) / self.total))
            bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}"
        else:
            bar = f"{done}"
        extra = f"  {failed} failed" if failed else ""
        self.stream.write(f"\r{self.label}: {bar} frames{extra}  {rate:.1f} frames/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
