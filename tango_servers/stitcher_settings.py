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
from tango import AttrWriteType, DispLevel
from tango.server import attribute, command

from pipeline_core.errors import PipelineError
from pipeline_core.live.stitch_stage import StitchStage
from pipeline_core.messages import MessageError, SettingsRequest
from pipeline_core.processing.integrate import MAX_BINS, UNITS
from pipeline_core.processing.units import DEFAULT_UNIT

from .change_events import follow_set_point
from .dev_failed import throw

#: message fields -> the attributes Tango memorizes them under
_ATTRIBUTES = {"poni_path": "poniPath", "mask_path": "maskPath", "bins": "bins", "unit": "unit"}


class StitcherSettings:
    """poniPath, maskPath, bins, unit (read/write, memorized), settings (JSON, events), SetSettings."""

    stage: StitchStage

    def _shown(self) -> dict:
        return self.stage.settings.shown()

    def _setting(self, name: str):
        """The value of setting attribute ``name`` shown (the unit integrated with while none was set),
        which is also its set-point: a client never shows "Not initialised"."""
        value = self._shown()[{v: k for k, v in _ATTRIBUTES.items()}[name]]
        value = (value or DEFAULT_UNIT) if name == "unit" else value
        follow_set_point(self, name, value)
        return value

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

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="PONI file",
        doc="pyFAI calibration of the chain, for the work queued from now on; refused if it does not parse",
    )
    def poniPath(self) -> str:
        return self._setting("poniPath")

    @poniPath.write
    def poniPath(self, value: str) -> None:
        self._change({"poni_path": value})

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Mask file",
        doc="user mask of the chain (EDF/TIFF/.mask/.npy, non-zero = masked); empty = gaps only",
    )
    def maskPath(self) -> str:
        return self._setting("maskPath")

    @maskPath.write
    def maskPath(self, value: str) -> None:
        self._change({"mask_path": value})

    @attribute(
        dtype=int,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Bins",
        unit="",
        format="%d",
        min_value=1,
        max_value=MAX_BINS,
        doc="number of radial bins of each 1-D pattern of the chain (0 = not set yet)",
    )
    def bins(self) -> int:
        return int(self._setting("bins"))

    @bins.write
    def bins(self, value: int) -> None:
        self._change({"bins": int(value)})

    @attribute(
        dtype=str,
        access=AttrWriteType.READ_WRITE,
        memorized=True,
        hw_memorized=True,
        label="Radial unit",
        doc=f"radial unit of the chain: one of {', '.join(UNITS)} (pyFAI names; {DEFAULT_UNIT} until set)",
    )
    def unit(self) -> str:
        return self._setting("unit")

    @unit.write
    def unit(self, value: str) -> None:
        self._change({"unit": value})

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

    def _memorize(self, changes: dict) -> None:
        """Store forwarded values as Tango stores a memorized attribute write (the ``__value`` attribute
        property), so that a restarted Stitcher restores what was last set, whichever device set it."""
        if not tango.Util._UseDb:  # e.g. a test context without database
            return
        props = {_ATTRIBUTES[k]: {"__value": [str(v)]} for k, v in changes.items()}
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
