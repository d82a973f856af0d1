"""The machine a benchmark ran on, in one line, so that two runs can be compared (issue 21).

Rates of the csr engine are bound by memory bandwidth (each product streams the matrix), and these
machines are shared: the line gives the cores, the CPU model, the memory bandwidth measured now
(a 256 MB numpy copy, best of three: bytes read + written per second) and the load average, which
says how much other work ran meanwhile.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def memory_bandwidth_gb_s(megabytes: int = 256, repeats: int = 3) -> float:
    """GB/s of a large array copy (read + write), best of ``repeats``."""
    src = np.ones(megabytes * (1 << 20) // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def describe() -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({cpu_model()}), memory copy {memory_bandwidth_gb_s():.1f} GB/s, "
            f"load average {load}")
