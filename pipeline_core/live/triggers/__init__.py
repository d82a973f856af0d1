"""How the Stitcher learns that new parts are on disk: one small component per kind of trigger.

- ``lambda``: follow a Lambda Tango server's own attributes (:mod:`.lambda_follow`): where it saves,
  how many frames per file, how far the acquisition is (``LatestImageNumber``, ``State``);
- ``watch``: watch the data directories for module files closed after writing or moved into place,
  with a sweep for files whose size has been stable (:mod:`.watch`);
- ``file-attribute``: change events of an attribute that carries each written module file's path
  (our simulator's ``lastWrittenFile``), handled by the Tango layer alone.

Each produces the same two kinds of input for :class:`~..stitch_stage.StitchStage`: a module file
written (``announce``) or a part the detector says is written (``announce_part``).
"""

from __future__ import annotations

from ...errors import ConfigError

TRIGGERS = ("lambda", "watch", "file-attribute")


def check_trigger(name: str) -> str:
    """The trigger named ``name``, or ConfigError naming it and the choices."""
    value = (name or "").strip().lower()
    if value not in TRIGGERS:
        raise ConfigError(f"Trigger {name!r} is unknown; expected one of {', '.join(TRIGGERS)}")
    return value
