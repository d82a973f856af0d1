"""The chain's integration settings as the Stitcher holds them: memorized, validated, pushed on change.

A mixin for :class:`~tango_servers.stitcher.Stitcher` (which holds ``self.stage``, a
:class:`~pipeline_core.live.stitch_stage.StitchStage`, whose ``settings`` are the chain's). Unlike the
other devices' :class:`~tango_servers.chain_settings.ChainSettingsDevice`, which show and forward,
these attributes are the chain's own: memorized here, so a restarted Stitcher restores them, and
``SetSettings`` takes what the others forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import tango
from tango import DispLevel
from tango.server import attribute, command

from pipeline_core.errors import PipelineError
from pipeline_core.live.stitch_stage import StitchStage
from pipeline_core.messages import MessageError, SettingsRequest
from pipeline_core.processing.integrate import UNITS
from pipeline_core.processing.units import DEFAULT_UNIT

from .dev_failed import throw
from .setting_attributes import ATTRIBUTE_NAMES, SETTING_ATTRIBUTES, setting_attribute


def _shown_field(device, field: str):
    """What the Stitcher shows of setting ``field`` (the unit integrated with while none was set)."""
    value = device.stage.settings.shown()[field]
    return (value or DEFAULT_UNIT) if field == "unit" else value


def _write_fields(device, changes: dict) -> None:
    device._change(changes)


class StitcherSettings:
    """poniPath, maskPath, bins, unit (read/write, memorized), settings (JSON, events), SetSettings."""

    stage: StitchStage

    def _shown(self) -> dict:
        return self.stage.settings.shown()

    def _change(self, changes: dict, initial: bool = False, where: str = "write") -> None:
        """Change the chain's settings (XRD_InvalidValue with the reason, the old value kept), then say so."""
        try:
            self.stage.set_settings(changes, initial=initial)
        except PipelineError as exc:
            throw("XRD_InvalidValue", str(exc), f"{self.get_name()} {where}")  # type: ignore[attr-defined]
        self.publisher.wake()  # type: ignore[attr-defined]  # settings, the four attributes and Status

    def _settings_json(self) -> str:
        current = self.stage.settings.current()
        return json.dumps({**self._shown(), "fingerprint": self._fingerprint(current) if current else ""})

    def _fingerprint(self, current) -> str:
        """The settings' fingerprint, hashed again only when they or their files' (size, mtime) change:
        every device of the chain reads ``settings`` each second, and hashing a 2M-pixel mask each time
        would slow the Stitcher's answers to everyone else."""
        files = [p for p in (current.poni_path, current.mask_path) if p is not None]
        key = (json.dumps(current.to_dict(), sort_keys=True), *(_stat(p) for p in files))
        cached = getattr(self, "_fingerprint_cache", None)
        if cached is None or cached[0] != key:
            cached = self._fingerprint_cache = (key, current.fingerprint())
        return cached[1]

    # memorized here (not on the devices that forward): a restarted Stitcher restores the chain's settings
    poniPath = setting_attribute(
        "poni_path",
        _shown_field,
        _write_fields,
        memorized=True,
        hw_memorized=True,
        doc="pyFAI calibration of the chain, for the work queued from now on; refused if it does not parse",
    )
    maskPath = setting_attribute("mask_path", _shown_field, _write_fields, memorized=True, hw_memorized=True)
    bins = setting_attribute("bins", _shown_field, _write_fields, memorized=True, hw_memorized=True)
    unit = setting_attribute(
        "unit",
        _shown_field,
        _write_fields,
        memorized=True,
        hw_memorized=True,
        doc=f"radial unit of the chain: one of {', '.join(UNITS)} (pyFAI names; {DEFAULT_UNIT} until set)",
    )

    @attribute(
        dtype=str,
        label="Settings in force",
        display_level=DispLevel.EXPERT,
        doc="JSON {poni_path, mask_path, bins, unit, fingerprint} of the chain (change events on every change; "
        "fingerprint empty while no PONI is set)",
    )
    def settings(self) -> str:
        return self._settings_json()

    @command(
        dtype_in=str,
        doc_in='JSON SettingsRequest {"type": "settings", "version": 1, "poni_path": ..., "mask_path": ..., '
        '"bins": ..., "unit": ..., "initial": false} (fields left out are unchanged)',
        dtype_out=str,
        doc_out="the settings attribute afterwards",
        display_level=DispLevel.EXPERT,
    )
    def SetSettings(self, request: str) -> str:
        """Change the chain's settings from the next work item on (Integrators and the Merger forward
        their writes here). ``initial`` values apply only while the chain has no PONI."""
        try:
            r = SettingsRequest.from_json(request)
        except MessageError as exc:
            throw("XRD_InvalidValue", f"SetSettings: {exc}", "Stitcher.SetSettings")
        self._change(r.changes(), initial=r.initial, where="SetSettings")
        if not r.initial:
            self._memorize(r.changes())
        return self._settings_json()

    def restore_memorized(self) -> None:
        """Take the memorized settings from the database into a new stage, all at once, before the
        trigger starts.

        At a server start Tango writes memorized attributes too, but only after ``init_device``,
        one attribute at a time, while the trigger may already announce parts: a scan queued
        between the poniPath and the bins writes was fixed with the PONI and the default bins, its
        patterns refused by the Merger as "other settings", the file closed with most frames failed
        (seen after a kill -9 of the Stitcher mid-scan). Restored here, every scan a new life queues
        has the settings of the last one; Tango's own writes that follow change nothing. After the
        ``Init`` command Tango writes none: without this an operator's Init in Jive would leave the
        chain without its PONI. A value that no longer holds (a PONI file since removed) is reported
        and left out, the others restored."""
        if not tango.Util._UseDb:
            return
        try:
            stored = tango.Util.instance().get_database().get_device_attribute_property(
                self.get_name(), list(ATTRIBUTE_NAMES.values())  # type: ignore[attr-defined]
            )
        except tango.DevFailed as exc:
            self.report_error(f"memorized settings not read: {exc}")  # type: ignore[attr-defined]
            return
        values = {}
        for field, name in ATTRIBUTE_NAMES.items():
            value = stored.get(name, {}).get("__value")
            if value:
                values[field] = (name, value[0])
        try:
            self.stage.set_settings({f: SETTING_ATTRIBUTES[f][0](v) for f, (_, v) in values.items()})
            return
        except (PipelineError, ValueError):
            pass  # one value no longer holds: restore the others one by one, naming the bad one
        for field, (name, value) in values.items():
            try:
                self.stage.set_settings({field: SETTING_ATTRIBUTES[field][0](value)})
            except (PipelineError, ValueError) as exc:
                self.report_error(f"memorized {name} {value!r} not restored: {exc}")  # type: ignore[attr-defined]

    def _memorize(self, changes: dict) -> None:
        """Store forwarded values as Tango stores a memorized attribute write (the ``__value`` attribute
        property), so that a restarted Stitcher restores what was last set, whichever device set it."""
        if not tango.Util._UseDb:  # e.g. a test context without database
            return
        props = {ATTRIBUTE_NAMES[k]: {"__value": [str(v)]} for k, v in changes.items()}
        try:
            tango.Util.instance().get_database().put_device_attribute_property(
                self.get_name(), props  # type: ignore[attr-defined]
            )
        except tango.DevFailed as exc:
            self.report_error(  # type: ignore[attr-defined]
                f"settings in force but not memorized (restart restores the old ones): {exc}"
            )


def _stat(path) -> tuple[int, int]:
    try:
        st = Path(path).stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)
