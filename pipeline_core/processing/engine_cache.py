"""Warm integration engines kept between work items, so a scan does not rebuild one per item.

An engine holds a CSR matrix (~120 MB for a Lambda 2M) and takes about a second to build; an
Integrator sees items of one scan after another, sometimes of two interleaved scans with different
settings. The cache keeps the ``max_engines`` most recently used engines per (settings fingerprint,
frame shape) and refuses to build one from a PONI or mask file whose content is no longer what the
item was queued with (integrating other content would mix calibrations in one scan).

Under it sits the engine store on disk (:mod:`.engine_store`): an engine this cache does not hold is
loaded from there when any process built it before (a restarted Integrator loads in well under a
second what it took 2-3 s to build), else built and stored.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError
from ..formats.mask import check_mask_shape, load_mask_file
from .engine_choice import DEFAULT_ENGINE, validate_engine
from .engine_store import EngineStore, default_store
from .integrate import IntegrationEngine, IntegrationSettings

log = logging.getLogger(__name__)


class EngineCache:
    """At most ``max_engines`` warm engines, least recently used dropped first; thread-safe."""

    def __init__(
        self, name: str, max_engines: int = 2, engine: str = DEFAULT_ENGINE, store: EngineStore | None | str = "default"
    ):
        """``store``: where built engines are kept between processes; ``"default"`` the process's
        (:func:`~.engine_store.default_store`), None none (build every time)."""
        #: who the engines are built for, in log lines
        self.name = name
        self.store: EngineStore | None = default_store() if isinstance(store, str) else store
        #: how the last engine came to be (built or loaded, from where, how long): what an operator
        #: reads to know whether a restarted Integrator found its engine or spent seconds building it
        self.last_source = "no engine yet"
        self.max_engines = max(1, int(max_engines))
        #: auto, csr or pyfai: which engine integrates (:mod:`.engine_choice`), the same for every entry
        self.engine = validate_engine(engine)
        #: (fingerprint, frame shape) -> warm engine, least recently used first
        self._engines: collections.OrderedDict[tuple[str, tuple[int, ...]], IntegrationEngine] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        self._own: tuple[IntegrationSettings, str] | None = None
        #: frame shape of the engine built last (None before the first): what a mask must fit
        self.frame_shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._engines)

    def _fingerprint(self, settings: IntegrationSettings) -> str:
        """The fingerprint of settings that came without one, computed once per value (it hashes the files)."""
        if self._own is None or self._own[0] is not settings:
            self._own = (settings, settings.fingerprint())
        return self._own[1]

    def engine_for(
        self,
        settings: IntegrationSettings,
        fingerprint: str | None,
        frame_shape: Sequence[int],
        detector_mask: np.ndarray | None,
    ) -> IntegrationEngine:
        """A warm engine for these settings and layout, built when none is cached.

        ``fingerprint``: what the item was queued with (None: settings of the stage's own, whose
        files are trusted as they are now). ConfigError when the files no longer match it.
        """
        rows, cols = (int(n) for n in frame_shape)
        shape = (rows, cols)
        key = (fingerprint or self._fingerprint(settings), shape)
        with self._lock:
            e = self._engines.get(key)
            if e is not None and e.settings == settings and _same_mask(e.detector_mask, detector_mask):
                self._engines.move_to_end(key)
                return e
            if settings.mask_path is not None:
                check_mask_shape(load_mask_file(settings.mask_path), shape, f"file {settings.mask_path}")
            log.info("%s: building integration engine for %s", self.name, settings)
            t0 = time.monotonic()
            e = IntegrationEngine(settings, shape, detector_mask, engine=self.engine, engine_store=self.store)
            self.last_source = _source(e, self.store, time.monotonic() - t0)
            if fingerprint is not None and e.fingerprint != fingerprint:
                raise ConfigError(
                    f"the PONI or mask file of this item ({settings.poni_path}, {settings.mask_path or 'no mask'}) "
                    f"changed since its scan was queued (fingerprint {fingerprint}, now {e.fingerprint}): "
                    "not integrated with other content; Reintegrate the acquisition"
                )
            self._engines[key] = e
            self._engines.move_to_end(key)
            while len(self._engines) > self.max_engines:
                self._engines.popitem(last=False)
            self.frame_shape = e.frame_shape
            return e


def _source(engine: IntegrationEngine, store: EngineStore | None, seconds: float) -> str:
    """One line: which engine, and whether it was loaded from the store or built (and where it went)."""
    what = f"{engine.used.name} engine for {engine.settings.poni_path}"
    if engine.from_store:
        return f"{what}: loaded from the engine cache {store.folder if store else '?'} in {seconds:.2f} s"
    if store is None:
        return f"{what}: built in {seconds:.1f} s (engine cache off)"
    return f"{what}: built in {seconds:.1f} s (engine cache {store.folder})"


def _same_mask(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Equal masks, or both absent (what ``np.array_equal`` answers, typed)."""
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b))
