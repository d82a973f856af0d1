"""Exceptions of the core, one per kind of problem an operator must act on.

Each message names the file or value at fault and what was expected, because it ends up verbatim in
a device's Status or on a terminal at 3 a.m.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the core raises on purpose."""


class SourceError(PipelineError):
    """An input file is missing, unreadable, truncated or not in the expected layout."""


class ConfigError(PipelineError):
    """A configuration value (YAML key, PONI, mask, bins, unit, path) is invalid."""


class OutputError(PipelineError):
    """A result file cannot be created or written."""


class UpstreamError(PipelineError):
    """An upstream device did not take a request (it is down, restarting or refused it): nothing was
    asked of it, so whoever asked tries again later instead of counting the request as made."""


def _size(n: int) -> str:
    """Bytes as an operator reads them (``1.3 MB``), exact count beside for the record."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit} ({n} bytes)"
    return f"{n} bytes"


class NoSpaceError(OutputError):
    """The file system of a result has no room for the next write.

    Raised *before* the write, from a free-space check: HDF5 does not survive ENOSPC (after one
    failed flush the process segfaults when the file is closed or at exit), so it must never meet
    it. The message names the folder, what was to be written, and the bytes needed and free.
    ``errno`` is ENOSPC, like the OSError it stands for.
    """

    errno = 28  # errno.ENOSPC on every platform we run on

    def __init__(self, folder: object, needed: int, free: int, what: str, detail: str = ""):
        self.folder, self.needed, self.free, self.what = folder, int(needed), int(free), what
        self.detail = detail
        text = f"no space left in {folder} for {what}: {_size(self.needed)} needed, {_size(self.free)} free"
        super().__init__(f"{text}; {detail}" if detail else text)

    def with_detail(self, detail: str) -> NoSpaceError:
        """The same error with what became of the file said after it (a new exception, chained)."""
        more = f"{self.detail}; {detail}" if self.detail else detail
        return NoSpaceError(self.folder, self.needed, self.free, self.what, more)
