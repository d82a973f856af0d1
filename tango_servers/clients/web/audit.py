"""Every write asked through the web server, with who, when, what and the chain's answer.

Kept in memory for the page (the last :data:`KEEP`), appended to ``audit_log`` when configured, and
logged; a listener (the live view) shows each new entry on every page at once. The file must be
writable when the server starts (:func:`unwritable`, else it refuses to start), and a write is run
only while it still is (:meth:`AuditLog.check` just before): nothing runs unaudited. Should the file
fail between that check and the entry (a full disk), the entry still goes to the page and the
server's log, with the error.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("xrd_pipeline.web.audit")

KEEP = 200


@dataclass(frozen=True)
class AuditEntry:
    time: str
    user: str
    how: str
    action: str
    detail: str
    ok: bool
    answer: str


class AuditLog:
    def __init__(self, path: Path | None = None, on_entry: Callable[[dict], None] | None = None):
        self.path = path
        self.on_entry = on_entry
        self._entries: deque[AuditEntry] = deque(maxlen=KEEP)
        self._lock = threading.Lock()

    def check(self) -> None:
        """OSError (with the path) when the audit file cannot be appended to now."""
        reason = unwritable(self.path)
        if reason:
            log.error("%s", reason)
            raise OSError(reason)

    def record(self, user: str, how: str, action: str, detail: str, ok: bool, answer: str) -> AuditEntry:
        """Keep, append and show one entry; never raises for the file (logged as an error instead)."""
        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entry = AuditEntry(when, user, how, action, detail, ok, answer)
        with self._lock:
            self._entries.append(entry)
            if self.path is not None:
                try:
                    with self.path.open("a") as out:
                        out.write(json.dumps(asdict(entry)) + "\n")
                except OSError as exc:
                    log.error("audit entry not written to %s (%s): %s", self.path, exc, asdict(entry))
        log.info("%s %s (%s): %s %s -> %s", when, user, how, action, detail, answer)
        if self.on_entry is not None:
            self.on_entry(asdict(entry))
        return entry

    def entries(self) -> list[dict]:
        with self._lock:
            return [asdict(e) for e in self._entries]


def unwritable(path: Path | None) -> str | None:
    """Why ``path`` cannot take audit entries (None: it can, or no audit file is configured)."""
    if path is None:
        return None
    try:
        with Path(path).open("a"):
            return None
    except OSError as exc:
        return f"audit_log {path}: cannot be appended to ({exc.strerror or exc}); expected a file this user can write"
