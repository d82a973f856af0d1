"""Which detector modules made the rows of a merged file: ``process/modules`` and ``process/modules_off``.

A Lambda 2M frame stitched from fewer than three modules is a different measurement (a third of the
rings' arcs missing), so a result says which modules it holds and which were off, and why — never
only the log or a device's Status. Written by every writer of merged files (offline, jobs, the
Merger), read back by :func:`read_modules`.
"""

from __future__ import annotations

from collections.abc import Iterable

import h5py
import numpy as np

from .nexus_layout import set_str


def record_modules(h5: h5py.File, on: Iterable[int], off: Iterable[int], note: str = "") -> None:
    """Write (or rewrite) the modules that are on and off, and the note saying who said so."""
    proc = h5["processed/process"]
    for name, values in (("modules", sorted(set(on))), ("modules_off", sorted(set(off)))):
        if name in proc:
            del proc[name]
        proc.create_dataset(name, data=np.asarray(values, dtype=np.int64))
    set_str(proc, "modules_note", note)


def read_modules(h5: h5py.File) -> tuple[list[int], list[int], str]:
    """The recorded modules (on, off, note); empty lists when the file does not say."""
    proc = h5["processed/process"]
    on = [int(v) for v in proc["modules"][()]] if "modules" in proc else []
    off = [int(v) for v in proc["modules_off"][()]] if "modules_off" in proc else []
    note = proc["modules_note"][()] if "modules_note" in proc else b""
    return on, off, note.decode() if isinstance(note, bytes) else str(note)


def off_note(off: Iterable[int], who: str) -> str:
    """The sentence a file carries for modules that are off (``who``: who said so)."""
    off = sorted(set(off))
    if not off:
        return ""
    names = ", ".join(f"m{k}" for k in off)
    return f"module(s) {names} off ({who}): their pixels are gaps of the full frame, masked"
