"""The files a PONI file names (a detector description, a distortion spline), identified by content.

Why: a PONI's values are not all of its geometry. ``Detector: NexusDetector`` with
``Detector_config: {"filename": "det.h5"}`` takes pixel sizes and shape from det.h5; ``splineFile``
(``SplineFile`` in version-1 PONIs) takes the distortion from a spline file; a ``Detector`` value that
names an existing file is read as that file (pyFAI's ``Detector.factory``). A digest of the PONI's
text alone loaded the engine built for 55 um pixels after det.h5 was recalibrated to 75 um in place.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

#: Detector_config keys whose value pyFAI opens as a file (compared in lower case, as pyFAI's factory does)
FILE_KEYS = ("filename", "splinefile")
MISSING = "missing"


def referenced_file_digests(values: dict[str, Any]) -> dict[str, str]:
    """``{where the PONI names it: SHA-256 of its content}`` for every file the PONI values (keys in
    lower case, as :func:`~.integrate.poni_digest` reads them) make pyFAI read; ``missing`` for a
    file named but absent. Paths resolve as pyFAI resolves them: against the working directory."""
    found: dict[str, str] = {}
    detector = values.get("detector")
    if isinstance(detector, str) and os.path.isfile(detector):
        found["detector"] = content_digest(detector)
    spline = values.get("splinefile")
    if isinstance(spline, str) and spline.strip().lower() != "none":
        found["splinefile"] = content_digest(spline)
    config = values.get("detector_config")
    if isinstance(config, dict):
        for key, value in config.items():
            if not isinstance(value, str):
                continue
            if str(key).lower() in FILE_KEYS or os.path.isfile(value):
                found[f"detector_config.{key}"] = content_digest(value)
    return found


def content_digest(path: str) -> str:
    """SHA-256 of the file's bytes; ``missing`` when it cannot be read (pyFAI's build then says why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return MISSING
    return digest.hexdigest()
