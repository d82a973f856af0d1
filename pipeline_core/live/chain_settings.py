"""The chain's integration settings in force: one set for the whole chain, changed field by field.

The Stitcher holds them (its stage stamps them on every work item); the other devices show them
and forward writes. They live apart from the stage so that each device, and a test, can build and
check them without a stage, and so that the stage only *uses* them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import ConfigError, PipelineError
from ..formats.mask import check_mask_shape, load_mask_file
from ..paths import confine
from ..processing.integrate import DEFAULT_BINS, IntegrationSettings, read_poni, validate_bins, validate_unit

#: The settings an operator changes (the devices' poniPath, maskPath, bins, unit attributes).
SETTING_FIELDS = ("poni_path", "mask_path", "bins", "unit")


def check_settings(
    settings: IntegrationSettings,
    frame_shape: tuple[int, int] | None = None,
    roots: tuple[str, ...] = (),
    parse_poni: bool = True,
) -> IntegrationSettings:
    """Refuse settings the chain could not integrate with: the PONI must parse (and hold a usable
    geometry), the mask must load and fit the frames (once their shape is known), both inside
    ``roots`` (empty: anywhere). Checked where they are written, so a bad value never reaches a scan.

    ``parse_poni`` False: the PONI is only confined and must exist — for a device that forwards the
    change to the Stitcher, which parses it: parsing needs pyFAI's geometry stack, ~2 s to import
    (more under load), too long inside an operator's 3 s attribute write, and ~70 MB per process."""
    confine(settings.poni_path, roots, "PONI file")
    if parse_poni:
        read_poni(settings.poni_path)
    elif not Path(settings.poni_path).is_file():
        raise ConfigError(f"PONI file {settings.poni_path} does not exist")
    if settings.mask_path is not None:
        confine(settings.mask_path, roots, "mask file")
        mask = load_mask_file(settings.mask_path)
        if frame_shape is not None:
            check_mask_shape(mask, frame_shape, f"file {settings.mask_path}")
    return settings


class ChainSettings:
    """The chain's integration settings in force, as plain values changed field by field.

    Why field by field: operators (and Tango's memorized attributes at a restart) write ``poniPath``,
    ``maskPath``, ``bins`` and ``unit`` one at a time; bins may come before any PONI. Each change is
    validated on the whole value it makes (a mask against the frame shape, say) and refused with the
    old value kept. Fields never given take IntegrationSettings' defaults once a PONI is given.
    Thread-safe.
    """

    def __init__(self, given: dict | None = None, roots: tuple[str, ...] = (), parse_poni: bool = True):
        self._lock = threading.Lock()
        self.roots = tuple(roots)
        #: False where the change is forwarded to the Stitcher, which parses the PONI (check_settings)
        self.parse_poni = parse_poni
        self._given: dict = {}
        self._current: IntegrationSettings | None = None
        if given:
            self.change(given)

    @classmethod
    def from_shown(cls, shown: dict, roots: tuple[str, ...] = (), parse_poni: bool = True) -> ChainSettings:
        """Rebuild from what a Stitcher shows (``""``/``0`` = never given), without validating again."""
        copy = cls(roots=roots, parse_poni=parse_poni)
        copy._given = {k: v for k, v in shown.items() if k in SETTING_FIELDS and v not in ("", 0, None)}
        if copy._given.get("poni_path"):
            copy._current = copy._build(copy._given)
        return copy

    def current(self) -> IntegrationSettings | None:
        """The settings in force, or None while no PONI was given."""
        return self._current

    def shown(self) -> dict:
        """poni_path, mask_path, bins, unit as devices show them ("" / 0 for a field not given yet)."""
        s, g = self._current, self._given
        if s is not None:
            return {"poni_path": str(s.poni_path), "mask_path": str(s.mask_path or ""), "bins": s.bins, "unit": s.unit}
        return {
            "poni_path": "",
            "mask_path": str(g.get("mask_path") or ""),
            "bins": int(g.get("bins", 0)),
            "unit": str(g.get("unit", "")),
        }

    def change(
        self, changes: dict, frame_shape: tuple[int, int] | None = None, initial: bool = False
    ) -> IntegrationSettings | None:
        """Apply ``changes`` (names of SETTING_FIELDS; mask ``""`` = none) or raise ConfigError, keeping
        the old value. ``initial`` (an Integrator's start-up values) applies only while there is no PONI,
        and only to fields nobody gave. Returns the settings in force afterwards."""
        unknown = set(changes) - set(SETTING_FIELDS)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; expected {', '.join(SETTING_FIELDS)}")
        with self._lock:
            if initial:
                if self._current is not None:
                    return self._current
                changes = {k: v for k, v in changes.items() if k not in self._given}
            given = {**self._given, **changes}
            if "bins" in changes:
                given["bins"] = validate_bins(changes["bins"])
            if "unit" in changes:
                validate_unit(changes["unit"])
            if changes.get("mask_path") and not given.get("poni_path"):
                confine(changes["mask_path"], self.roots, "mask file")
                mask = load_mask_file(changes["mask_path"])
                if frame_shape is not None:
                    check_mask_shape(mask, frame_shape, f"file {changes['mask_path']}")
            settings = None
            if given.get("poni_path"):
                settings = check_settings(self._build(given), frame_shape, self.roots, self.parse_poni)
            self._given, self._current = given, settings
            return settings

    def adopt_offer(self, settings: dict, frame_shape: tuple[int, int] | None = None) -> str:
        """Take a claimant's initial settings (its properties) while the chain has no PONI; returns
        why they were refused ("" when taken, ignored, or not offered): a claim goes on regardless."""
        offer = offered_settings(settings)
        if not offer or self.current() is not None:
            return ""
        try:
            self.change(offer, frame_shape, initial=True)
        except PipelineError as exc:
            return str(exc)
        return ""

    @staticmethod
    def _build(given: dict) -> IntegrationSettings:
        return IntegrationSettings(
            given["poni_path"],
            bins=given.get("bins", DEFAULT_BINS),
            unit=given.get("unit") or "2th_deg",
            mask_path=given.get("mask_path") or None,
        )


def offered_settings(settings: dict) -> dict | None:
    """The initial settings a claimant offers (its properties), or None when they hold no PONI."""
    offer = {k: settings[k] for k in SETTING_FIELDS if settings.get(k) is not None}
    return offer if offer.get("poni_path") else None
