"""Exceptions of the core, one per kind of problem an operator must act on.

Each message names the file or value at fault and what was expected, because it ends up verbatim in
a device's Status or on a terminal at 3 a.m.
"""


class PipelineError(Exception):
    """Base class of every error the core raises on purpose."""


class SourceError(PipelineError):
    """An input file is missing, unreadable, truncated or not in the expected layout."""


class ConfigError(PipelineError):
    """A configuration value (YAML key, PONI, mask, bins, unit, path) is invalid."""


class OutputError(PipelineError):
    """A result file cannot be created or written."""
