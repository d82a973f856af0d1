"""Which settings an Integrator integrates a work item with, and which it must refuse.

An item carries the chain's settings in force when its scan was queued (values + fingerprint), so
any Integrator integrates it exactly as queued; the Integrator's own settings serve only items
that carry none (in-process drivers that give the Stitcher no settings). The PONI and mask files
an item names must lie inside the calibration roots: an item names files, and whoever can put an
answer to ClaimWork on the wire could name any.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..formats.mask import check_mask_shape, load_mask_file
from ..messages import WorkItem
from ..paths import confine
from ..processing.integrate import IntegrationSettings, read_poni


class ItemSettings:
    """An Integrator's own settings and the rule that picks an item's."""

    def __init__(self, own: IntegrationSettings | None, calibration_roots: tuple[str, ...] = ()):
        self.own = own
        #: the PONI and mask files an item names must lie inside these (empty: anywhere)
        self.calibration_roots = tuple(calibration_roots)

    def set_own(self, settings: IntegrationSettings, frame_shape: tuple[int, int] | None) -> None:
        """Validate, then switch the settings for items that carry none. A bad PONI or a mask that
        does not fit ``frame_shape`` (when known) raises and the old value stays."""
        read_poni(settings.poni_path)
        if settings.mask_path is not None:
            mask = load_mask_file(settings.mask_path)
            if frame_shape is not None:
                check_mask_shape(mask, frame_shape, f"file {settings.mask_path}")
        self.own = settings

    def for_item(self, item: WorkItem) -> tuple[IntegrationSettings, str | None]:
        """The settings to integrate ``item`` with and the fingerprint they were queued with (None for
        the own settings). ConfigError for settings this Integrator must not use."""
        if not item.settings:
            if self.own is None:
                raise ConfigError(
                    "the chain has no integration settings: write poniPath on the Stitcher, an Integrator or "
                    "the Merger, then Reintegrate"
                )
            return self.own, None
        settings = IntegrationSettings.from_dict(item.settings)
        confine(settings.poni_path, self.calibration_roots, "PONI file of the work item")
        if settings.mask_path is not None:
            confine(settings.mask_path, self.calibration_roots, "mask file of the work item")
        return settings, item.settings_hash
