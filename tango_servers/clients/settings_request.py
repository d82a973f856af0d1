"""The chain's settings as a client changes them: only the fields the operator edited, in ONE
``SetSettings`` (all taken or none), and a file outside the calibration roots refused before it is sent.

Plain functions without Qt or a web framework, so the panel and the web server apply the same rules
(the Stitcher checks everything again: these only make the refusal come earlier, naming the roots).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pipeline_core.messages import MessageError, SettingsRequest
from pipeline_core.processing.units import UNITS


def outside_roots(path: str, roots: list[str] | tuple[str, ...], what: str) -> str:
    """Why ``path`` may not be chosen ("" if it may): it must lie under one of ``roots`` (none: anywhere).

    The Stitcher refuses such a file anyway; saying so in the panel, before Apply, names the roots."""
    if not roots:
        return ""
    real = os.path.realpath(path)
    for root in roots:
        top = os.path.realpath(root)
        if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
            return ""
    return f"{what} {path} is outside the calibration roots ({', '.join(roots)}); choose a file under one of them"


#: the Stitcher's setting attributes (what the panel shows) -> the fields of ``SetSettings``
SETTING_FIELDS = {"poniPath": "poni_path", "maskPath": "mask_path", "bins": "bins", "unit": "unit"}


def edited_settings(in_force: Mapping[str, object], editor: Mapping[str, object]) -> dict[str, object]:
    """The fields (attribute names) where the editor differs from the value in force it was showing:
    what the operator changed. Only these are sent, so Apply never puts back a value that someone
    else (a macro, another panel) set since the editor was filled."""
    return {attr: value for attr, value in editor.items() if value != in_force.get(attr)}


def settings_request(changes: Mapping[str, object]) -> str:
    """The JSON of the one ``SetSettings`` Apply sends: the changed fields (attribute names -> value),
    all taken or none; a field left out stays as the chain has it. ValueError (naming the value) for
    no change, an unknown field or unit, or an empty PONI path."""
    unknown = sorted(set(changes) - set(SETTING_FIELDS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(SETTING_FIELDS)}")
    if "unit" in changes and changes["unit"] not in UNITS:
        raise ValueError(f"unit {changes['unit']!r} is unknown; expected one of {', '.join(UNITS)}")
    fields = {SETTING_FIELDS[attr]: value for attr, value in changes.items()}
    if "bins" in fields:
        fields["bins"] = int(fields["bins"])
    request = SettingsRequest(**fields)
    try:
        request.check()
    except MessageError as exc:
        raise ValueError(str(exc)) from exc
    return request.to_json()
