"""Which engine integrates: the sparse mat-vec engine where it reproduces pyFAI exactly, else pyFAI's own path.

Operators choose with ``xrd-pipeline integrate --engine`` or the Integrator's ``Engine`` property:

* ``auto`` (default): :mod:`.csr_engine` when it is exact for the settings, pyFAI's path otherwise;
  the file records which one ran and why;
* ``csr``: the sparse engine or a ConfigError saying why it cannot be exact here;
* ``pyfai``: pyFAI's own ``integrate_ng``/``integrate1d``, as before issue 11.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .engine_build import child_build_supported

if TYPE_CHECKING:
    from .integrate import IntegrationSettings

ENGINES = ("auto", "csr", "pyfai")
DEFAULT_ENGINE = "auto"


def validate_engine(name: object) -> str:
    """The engine name, or ConfigError naming the bad value and the choices."""
    if not isinstance(name, str) or name not in ENGINES:
        raise ConfigError(f"engine {name!r} is unknown; expected one of {', '.join(ENGINES)}")
    return name


def csr_refusal(settings: IntegrationSettings) -> str | None:
    """Why the sparse engine cannot give pyFAI's ``integrate1d`` result for these settings (None: it can)."""
    method = ",".join(settings.method)
    if not child_build_supported(settings.method):
        return f"method {method} is not one of pyFAI's csr/cython methods, whose coefficients the csr engine applies"
    if settings.error_model == "azimuthal":
        return (
            "the azimuthal error model (each bin's spread around its own mean, back-projected per pixel) "
            "needs pyFAI's own path"
        )
    return None


@dataclass(frozen=True)
class EngineUsed:
    """What integrates, for the provenance: ``name`` is csr or pyfai, ``note`` says what it is and why."""

    name: str
    note: str


def csr_used(settings: IntegrationSettings) -> EngineUsed:
    return EngineUsed(
        "csr",
        f"one sparse matrix-vector product per frame (scipy) with pyFAI's own {','.join(settings.method)} "
        "coefficients, normalisation summed per bin in advance, the module stitch folded into the columns",
    )


def pyfai_used(settings: IntegrationSettings, why: str) -> EngineUsed:
    return EngineUsed("pyfai", f"pyFAI's own {','.join(settings.method)} integration; {why}")
