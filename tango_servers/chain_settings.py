"""The chain's integration settings as an Integrator or the Merger shows and changes them.

The Stitcher holds the chain's settings (``pipeline_core.live.chain_settings.ChainSettings``); the other
devices show the same four attributes and forward writes to it. Both live here once: the client that
talks to the Stitcher, and the device base that declares ``poniPath``/``maskPath``/``bins``/``unit``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tango

from pipeline_core.errors import PipelineError
from pipeline_core.live.chain_settings import ChainSettings
from pipeline_core.messages import SettingsRequest
from pipeline_core.processing.units import DEFAULT_UNIT

from .base import PipelineDevice
from .dev_failed import throw
from .setting_attributes import setting_attribute

#: seconds between the reads of the chain's settings from the Stitcher for change events and Status
SETTINGS_REFRESH_S = 1.0


class ChainSettingsClient:
    """How an Integrator or the Merger shows and changes the chain's settings, which a Stitcher holds.

    Reads ask the Stitcher every time (its ``settings`` attribute, one call): a copy kept up to date
    by change events would go stale when an event is lost (events are hints), and a device showing
    another value than the chain integrates with is worse than one that says it cannot tell.
    Writes are validated here first (the caller's roots and frame shape), then forwarded to
    ``SetSettings``, where the Stitcher validates them again: its answer decides. A device without
    a Stitcher is a chain of one: it holds the settings itself (its initial values, then its writes).
    """

    def __init__(self, stitcher: str, roots: tuple[str, ...] = (), initial: dict | None = None):
        self.trl = stitcher
        self.proxy = tango.DeviceProxy(stitcher) if stitcher else None
        if self.proxy is not None:
            self.proxy.set_timeout_millis(10_000)  # a first PONI check may import pyFAI there
        self.roots = tuple(roots)
        #: the device's initial values (its properties): offered while the chain has no PONI (all of
        #: them with a PONI; bins/unit/mask alone just before a write of this device sets the first PONI)
        self.initial = {k: v for k, v in (initial or {}).items() if v not in ("", None)} or None
        #: the values last read (Status shows them without asking the Stitcher again)
        self.last_shown: dict = ChainSettings().shown()
        self.local: ChainSettings | None = None
        #: why the initial values were refused (no Stitcher: checked here), or None
        self.initial_error: str | None = None
        self._closed = threading.Event()
        if self.proxy is None:
            self.local = ChainSettings(roots=self.roots)
            try:
                self.local.change(self.initial or {})
            except PipelineError as exc:
                self.initial_error = str(exc)
            self.last_shown = self.local.shown()

    def shown(self) -> dict:
        """poni_path, mask_path, bins, unit of the chain ("" / 0 while not set); DevFailed naming the
        Stitcher when it cannot be asked."""
        if self.local is not None:
            return self.local.shown()
        shown = self._read()
        if not shown["poni_path"] and self.offers:
            self.offer()
            shown = self._read()
        self.last_shown = shown
        return shown

    @property
    def offers(self) -> bool:
        """There is a Stitcher to offer the initial values to, and they name a PONI (without one they are
        offered only with this device's first PONI write)."""
        return self.proxy is not None and bool((self.initial or {}).get("poni_path"))

    def _stitcher(self) -> tango.DeviceProxy:
        if self.proxy is None:
            throw("XRD_NotConfigured", "no Stitcher: this device holds the chain's settings itself", "ChainSettings")
        return self.proxy

    def _read(self) -> dict:
        try:
            return json.loads(self._stitcher().read_attribute("settings").value)
        except (tango.DevFailed, ValueError, TypeError) as exc:
            reason = exc.args[0].desc.strip() if isinstance(exc, tango.DevFailed) else str(exc)
            throw(
                "XRD_NotConnected",
                f"cannot read the chain's settings from the Stitcher {self.trl}: {reason}",
                "ChainSettingsClient.shown",
            )

    def offer(self) -> None:
        """Offer the initial values (no effect once the chain has a PONI); a refusal is raised."""
        if self.offers:
            request = SettingsRequest(**(self.initial or {}), initial=True)
            self._stitcher().command_inout("SetSettings", request.to_json())

    def offer_until_answered(self, on_refused: Callable[[str], None], attempts: int = 120, wait_s: float = 1.0) -> None:
        """Offer the initial values from a thread until the Stitcher answers (it may start after us), so
        the chain shows them before any claim (claims offer them too); ``on_refused`` gets why the
        Stitcher refused them. Nothing to do without a Stitcher or an initial PONI; :meth:`close` stops it."""
        if not self.offers:
            return
        args = (on_refused, attempts, wait_s)
        threading.Thread(target=self._offer_until_answered, args=args, name="xrd-offer-settings", daemon=True).start()

    def _offer_until_answered(self, on_refused: Callable[[str], None], attempts: int, wait_s: float) -> None:
        with tango.EnsureOmniThread():
            for _ in range(attempts):
                try:
                    self.offer()
                    return
                except tango.DevFailed as exc:
                    if exc.args[0].reason == "XRD_InvalidValue":  # reached it, and it refused the values
                        on_refused(exc.args[0].desc)
                        return
                if self._closed.wait(wait_s):
                    return

    def close(self) -> None:
        """Stop offering (``delete_device``)."""
        self._closed.set()

    def write(self, changes: dict, frame_shape=None, where: str = "write") -> None:
        """Validate ``changes`` on the chain's values, then forward them; XRD_InvalidValue (the old
        value kept) for a refusal here or at the Stitcher, XRD_NotConfigured without a Stitcher."""
        if self.local is not None:
            try:
                self.local.change(changes, frame_shape)
            except PipelineError as exc:
                throw("XRD_InvalidValue", str(exc), where)
            self.last_shown = self.local.shown()
            return
        shown = self._read()
        rest = {k: v for k, v in (self.initial or {}).items() if k != "poni_path" and k not in changes}
        first = not shown["poni_path"] and bool(rest)  # this device's Bins/Unit/MaskPath count as initial values
        try:
            # the Stitcher parses the PONI: here only roots, existence, mask, bins and unit are checked
            chain = ChainSettings.from_shown(shown, roots=self.roots, parse_poni=False)
            if first:
                chain.change(rest, frame_shape, initial=True)
            chain.change(changes, frame_shape)
        except PipelineError as exc:
            throw("XRD_InvalidValue", str(exc), where)
        try:
            if first:
                self._stitcher().command_inout("SetSettings", SettingsRequest(**rest, initial=True).to_json())
            self._stitcher().command_inout("SetSettings", SettingsRequest(**changes).to_json())
        except tango.DevFailed as exc:
            throw(exc.args[0].reason, exc.args[0].desc.strip(), where)
        self.shown()

    def describe(self) -> str:
        """The values last seen, for Status (no call to the Stitcher)."""
        s = self.last_shown
        if not s["poni_path"]:
            return "chain: no PONI set"
        return f"chain: {Path(s['poni_path']).name}, {s['bins']} bins, {s['unit'] or DEFAULT_UNIT}"


#: setting attribute -> field of the shown settings
_FIELDS = {"poniPath": "poni_path", "maskPath": "mask_path", "bins": "bins", "unit": "unit"}


def _field(shown: dict, field: str):
    """The value shown for ``field``; the unit the chain integrates with while none was set."""
    return (shown[field] or DEFAULT_UNIT) if field == "unit" else shown[field]


def _shown_field(device: ChainSettingsDevice, field: str):
    return _field(device.chain_settings.shown(), field)


def _forward(device: ChainSettingsDevice, changes: dict) -> None:
    device._apply(**changes)
    device.publisher.wake()  # the new values, and Status showing them, as change events


class ChainSettingsDevice(PipelineDevice):
    """A device that shows the chain's settings and forwards writes (Integrator, Merger).

    Subclasses create ``self.chain_settings`` (a :class:`ChainSettingsClient`) in ``init_device`` and
    may override :meth:`_apply` to validate more (the Integrator checks the mask against its frames).
    """

    chain_settings: ChainSettingsClient

    def _apply(self, **changes) -> None:
        self.chain_settings.write(changes, None, f"{self.get_name()} write")

    def before_publish(self) -> None:
        """Ask the Stitcher at most once a second (not once per setting attribute and comparison), so a
        write on another device shows here, in the attributes' events and in Status, within a second."""
        super().before_publish()
        now = time.monotonic()
        if now - getattr(self, "_settings_asked_at", float("-inf")) >= SETTINGS_REFRESH_S:
            self._settings_asked_at = now
            self.chain_settings.shown()

    def published_value(self, name: str):
        if name in _FIELDS:  # the snapshot :meth:`before_publish` just took
            return _field(self.chain_settings.last_shown, _FIELDS[name])
        return super().published_value(name)

    poniPath = setting_attribute(
        "poni_path",
        _shown_field,
        _forward,
        doc="pyFAI calibration of the chain (the Stitcher's); a write changes it for the whole chain from the "
        "next scan on, refused if it does not parse",
    )
    maskPath = setting_attribute("mask_path", _shown_field, _forward)
    bins = setting_attribute("bins", _shown_field, _forward)
    unit = setting_attribute("unit", _shown_field, _forward)
