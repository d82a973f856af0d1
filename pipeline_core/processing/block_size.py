"""How many frames one sparse product takes: chosen by timing the first blocks, not by guess.

Why measured: a block of k frames reads each slab of the matrix once for k frames, but the block
itself (slab columns × k float32) must be written and read too, and where the two balance depends on
the machine's caches and memory bandwidth (measured on a shared 2-core machine of this project, one
Lambda 2M frame: ~6.5 ms alone, 5.6-6.6 ms in blocks of 8, with much scatter from the other load).

:class:`BlockSize` hands out the candidate sizes in turn for the first blocks (each timed twice,
in CPU seconds of the thread that ran it, which other processes disturb less than wall time), then
the one with the least time per frame. Results do not depend on k (see :mod:`.csr_engine`), so
probing on real frames costs nothing but the slower sizes' extra milliseconds.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

#: Candidate frames per product (those a block buffer of BLOCK_BYTES can hold, :mod:`.csr_engine`).
CANDIDATES = (1, 2, 4, 8, 16)
#: Timings per candidate before the choice (the least is kept: other load only ever adds time).
TRIALS = 2


class BlockSize:
    """Block sizes to use, probed on the first blocks; thread-safe (one engine serves every worker)."""

    def __init__(self, candidates: tuple[int, ...] = CANDIDATES, trials: int = TRIALS, limit: int | None = None):
        """``limit``: the most frames a block may hold (memory); larger candidates are dropped."""
        if not candidates or min(candidates) < 1:
            raise ValueError(f"block size candidates {candidates}; expected positive frame counts")
        allowed = [int(k) for k in candidates if limit is None or k <= limit]
        self.candidates = tuple(sorted(set(allowed or [max(1, int(limit or 1))])))
        self.trials = int(trials)
        #: candidate -> CPU ms per frame of each trial
        self.timings: dict[int, list[float]] = {k: [] for k in self.candidates}
        #: the block size chosen, None while probing
        self.chosen: int | None = None
        #: the most frames a batch has offered: candidates above it cannot be timed on these batches
        self.largest_batch = 0
        self._lock = threading.Lock()

    def next(self, available: int) -> int:
        """Frames for the next product, when ``available`` frames are waiting (at least one)."""
        with self._lock:
            self.largest_batch = max(self.largest_batch, available)
            if self.chosen is not None:
                return max(1, min(self.chosen, available))
            for k in self.candidates:
                if len(self.timings[k]) < self.trials and k <= available:
                    return k
            # what can be probed with batches this small is probed: the best of those so far
            fitting = [k for k in self.candidates if k <= available]
            return self._best(fitting) if fitting else 1

    def record(self, k: int, cpu_s: float) -> None:
        """The product of ``k`` frames took ``cpu_s``; the choice is made once every candidate that the
        batches seen so far can fill is timed (batches of 2 frames choose between 1 and 2)."""
        with self._lock:
            if self.chosen is not None or k not in self.timings or len(self.timings[k]) >= self.trials:
                return
            self.timings[k].append(1e3 * cpu_s / k)
            fitting = [c for c in self.candidates if c <= self.largest_batch] or [min(self.candidates)]
            if all(len(self.timings[c]) >= self.trials for c in fitting):
                self.chosen = self._best(fitting)
                log.info("block size probe: %s", self.describe())

    def _best(self, among) -> int:
        timed = [k for k in among if self.timings[k]]
        return min(timed, key=lambda k: min(self.timings[k])) if timed else min(among)

    def describe(self) -> str:
        """The probe as a line: CPU ms per frame of each block size, and the one chosen."""
        parts = [f"k={k} {min(t):.1f} ms/frame" for k, t in self.timings.items() if t]
        return ", ".join(parts) + (f" -> {self.chosen}" if self.chosen is not None else " (probing)")
