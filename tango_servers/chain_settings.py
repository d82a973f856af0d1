"""The chain's integration settings as an Integrator or the Merger shows and changes them.

The Stitcher holds the chain's settings (``pipeline_core.stitch_stage.ChainSettings``); the other
devices show the same four attributes and forward writes to it. Both live here once: the client that
talks to the Stitcher, and the device base that declares ``poniPath``/``maskPath``/``bins``/``unit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import tango
from tango import AttrWriteType
from tango.server import attribute

from pipeline_core.errors import PipelineError
from pipeline_core.integrate import MAX_BINS, UNITS
from pipeline_core.messages import SettingsRequest
from pipeline_core.stitch_stage import ChainSettings

from .base import PipelineDevice


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
        if not shown["poni_path"] and self.initial is not None and self.initial.get("poni_path"):
            self.offer()
            shown = self._read()
        self.last_shown = shown
        return shown

    def _read(self) -> dict:
        try:
            return json.loads(self.proxy.read_attribute("settings").value)
        except (tango.DevFailed, ValueError, TypeError) as exc:
            reason = exc.args[0].desc.strip() if isinstance(exc, tango.DevFailed) else str(exc)
            tango.Except.throw_exception(
                "XRD_NotConnected", f"cannot read the chain's settings from the Stitcher {self.trl}: {reason}",
                "ChainSettingsClient.shown",
            )

    def offer(self) -> None:
        """Offer the initial values (no effect once the chain has a PONI); a refusal is raised."""
        if self.proxy is not None and self.initial is not None and self.initial.get("poni_path"):
            request = SettingsRequest(**self.initial, initial=True).to_json()
            self.proxy.command_inout("SetSettings", request)

    def write(self, changes: dict, frame_shape=None, where: str = "write") -> None:
        """Validate ``changes`` on the chain's values, then forward them; XRD_InvalidValue (the old
        value kept) for a refusal here or at the Stitcher, XRD_NotConfigured without a Stitcher."""
        if self.local is not None:
            try:
                self.local.change(changes, frame_shape)
            except PipelineError as exc:
                tango.Except.throw_exception("XRD_InvalidValue", str(exc), where)
            self.last_shown = self.local.shown()
            return
        shown = self._read()
        rest = {k: v for k, v in (self.initial or {}).items() if k != "poni_path" and k not in changes}
        first = not shown["poni_path"] and bool(rest)  # this device's Bins/Unit/MaskPath count as initial values
        try:
            chain = ChainSettings.from_shown(shown, roots=self.roots)
            if first:
                chain.change(rest, frame_shape, initial=True)
            chain.change(changes, frame_shape)
        except PipelineError as exc:
            tango.Except.throw_exception("XRD_InvalidValue", str(exc), where)
        try:
            if first:
                self.proxy.command_inout("SetSettings", SettingsRequest(**rest, initial=True).to_json())
            self.proxy.command_inout("SetSettings", SettingsRequest(**changes).to_json())
        except tango.DevFailed as exc:
            tango.Except.throw_exception(exc.args[0].reason, exc.args[0].desc.strip(), where)
        self.shown()

    def describe(self) -> str:
        """The values last seen, for Status (no call to the Stitcher)."""
        s = self.last_shown
        if not s["poni_path"]:
            return "chain: no PONI set"
        return f"chain: {Path(s['poni_path']).name}, {s['bins']} bins, {s['unit']}"


class ChainSettingsDevice(PipelineDevice):
    """A device that shows the chain's settings and forwards writes (Integrator, Merger).

    Subclasses create ``self.chain_settings`` (a :class:`ChainSettingsClient`) in ``init_device`` and
    may override :meth:`_apply` to validate more (the Integrator checks the mask against its frames).
    """

    chain_settings: ChainSettingsClient

    def _chain(self, field: str):
        return self.chain_settings.shown()[field]

    def _apply(self, **changes) -> None:
        self.chain_settings.write(changes, None, f"{self.get_name()} write")

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        label="PONI file",
        doc="pyFAI calibration of the chain (the Stitcher's); a write changes it for the whole chain from the "
        "next scan on, refused if it does not parse",
    )
    def poniPath(self) -> str:
        return self._chain("poni_path")

    @poniPath.write
    def poniPath(self, value: str) -> None:
        self._apply(poni_path=value)

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        label="Mask file",
        doc="user mask of the chain (EDF/TIFF/.mask/.npy, non-zero = masked); empty = gaps only",
    )
    def maskPath(self) -> str:
        return self._chain("mask_path")

    @maskPath.write
    def maskPath(self, value: str) -> None:
        self._apply(mask_path=value)

    @attribute(
        dtype=int,
        access=AttrWriteType.READ_WRITE,
        label="Bins",
        unit="bins",
        format="%d",
        min_value=1,
        max_value=MAX_BINS,
        doc="number of radial bins of each 1-D pattern of the chain (0 = not set yet)",
    )
    def bins(self) -> int:
        return int(self._chain("bins"))

    @bins.write
    def bins(self, value: int) -> None:
        self._apply(bins=int(value))

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        label="Radial unit",
        doc=f"radial unit of the chain: one of {', '.join(UNITS)} (pyFAI names)",
    )
    def unit(self) -> str:
        return self._chain("unit")

    @unit.write
    def unit(self, value: str) -> None:
        self._apply(unit=value)
