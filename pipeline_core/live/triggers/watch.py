"""Watching data directories for Lambda module files that are complete: closed after writing or
moved into place, or -- where inotify sees nothing (network filesystems) -- stable for a while.

Why both: facility tools (DESY's HiDRA, ASAP::O's folder producer) do the same. inotify says at
once when a writer closes a file (``IN_CLOSE_WRITE``) or renames it into place (``IN_MOVED_TO``);
a periodic sweep finds what inotify cannot see: files on NFS/GPFS written by another host, and the
files written while the Stitcher was down (it finds the parts it missed). A file inotify saw being
written and not closed yet is never taken by the sweep, however long it is quiet.

:class:`CompletionTracker` is the rule (no threads, no clock of its own: tests feed it events and
times); :class:`DirectoryWatch` runs it with watchdog's inotify observer and a sweep thread, and calls
``on_file(path)`` once per complete module file. Grouping files into parts and waiting for the
missing modules (up to ``ModuleTimeout``) is the stage's job, as for every trigger.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...formats.lambda_files import parse_lambda_name
from ...paths import OutsideRootsError, confine
from ..deadline import Deadline, as_deadline

log = logging.getLogger(__name__)

#: Module files looked at per sweep of one directory tree (a beamtime folder holds thousands).
MAX_SWEEP_FILES = 200_000
#: seconds :meth:`DirectoryWatch.stop` waits for its threads when no deadline is given
WATCH_STOP_S = 5.0


@dataclass(frozen=True)
class WatchConfig:
    directories: tuple[str, ...]
    #: every watched directory and every file taken must lie under one of these (empty: anywhere)
    roots: tuple[str, ...] = ()
    #: a file quiet (same size and mtime) this long is complete, for the sweep
    stable_s: float = 2.0
    sweep_s: float = 2.0
    #: at start, acquisitions with a file changed this long before are taken (the parts missed while
    #: the Stitcher was down); older ones are a past beamtime's, left alone
    backlog_s: float = 300.0
    #: False: the sweep alone (what a network filesystem leaves; a quiet file is then taken as complete)
    use_inotify: bool = True


def is_module_file(path: str | Path) -> bool:
    name = parse_lambda_name(path)
    return name is not None and name.module is not None


@dataclass
class CompletionTracker:
    """Which module files are complete, from inotify events and sweeps. Not thread-safe: one lock
    around it (the :class:`DirectoryWatch` holds it)."""

    stable_s: float
    #: files that count as complete already (taken once)
    taken: set[str] = field(default_factory=set)
    #: files inotify saw being written and not closed since: never taken by a sweep
    writing: set[str] = field(default_factory=set)
    #: sweep: path -> (size, mtime_ns) seen last
    _seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    def written_to(self, path: str) -> None:
        if is_module_file(path):
            self.writing.add(path)
            self.taken.discard(path)  # written again (the name acquired again): taken anew once closed

    def closed(self, path: str) -> bool:
        """A writer closed ``path`` (or renamed it into place): True when it is newly complete."""
        self.writing.discard(path)
        return self._take(path)

    def swept(self, path: str, size: int, mtime_ns: int, now_ns: int) -> bool:
        """The sweep saw ``path``: True when it is newly complete (quiet for ``stable_s``)."""
        if path in self.taken or path in self.writing:
            return False
        before, self._seen[path] = self._seen.get(path), (size, mtime_ns)
        quiet = now_ns - mtime_ns >= self.stable_s * 1e9
        return before == (size, mtime_ns) and quiet and self._take(path)

    def _take(self, path: str) -> bool:
        if path in self.taken or not is_module_file(path):
            return False
        self.taken.add(path)
        self._seen.pop(path, None)
        return True


def recent_stems(files: Iterable[tuple[str, int]], since_ns: int) -> set[tuple[str, str]]:
    """(directory, stem) of acquisitions with a file changed at or after ``since_ns``."""
    stems = set()
    for path, mtime_ns in files:
        name = parse_lambda_name(path)
        if name is not None and mtime_ns >= since_ns:
            stems.add((os.path.dirname(path), name.stem))
    return stems


class DirectoryWatch:
    """Watches ``config.directories`` (recursively) and calls ``on_file`` once per complete module file.

    ``on_error`` gets what it refused (a file outside the roots, a directory that vanished).
    Start with :meth:`start`, end with :meth:`stop`.
    """

    def __init__(self, config: WatchConfig, on_file: Callable[[str], None], on_error: Callable[[str], None]):
        if not config.directories:
            raise ConfigError("Trigger watch needs WatchDirectories: the folders the detector writes into")
        self.config = config
        self.directories = [confine(d, config.roots, "WatchDirectories entry") for d in config.directories]
        for d in self.directories:
            if d.exists() and not d.is_dir():
                raise ConfigError(f"WatchDirectories entry {d} is not a directory")
        self._handler: Any = None
        self._scheduled: set[Path] = set()  # a folder not made yet is watched once it exists
        self._on_file, self._on_error = on_file, on_error
        self._lock = threading.Lock()
        self._tracker = CompletionTracker(config.stable_s)
        self._stop = threading.Event()
        self._observer = None
        self._sweeper: threading.Thread | None = None
        self._started_ns = time.time_ns()
        self._first_sweep = True
        #: why inotify is not used ('' when it is)
        self.inotify_problem = ""
        self.files_taken = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._started_ns = time.time_ns()
        try:
            if not self.config.use_inotify:
                raise OSError("switched off")
            self._observer = self._start_observer()
        except OSError as exc:  # e.g. the inotify watch limit: the sweep alone still works
            self.inotify_problem = f"inotify unavailable ({exc}); sweeping every {self.config.sweep_s:g} s only"
            log.warning(self.inotify_problem)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="xrd-watch-sweep", daemon=True)
        self._sweeper.start()

    def stop(self, deadline: Deadline | float | None = None) -> bool:
        """End inotify and the sweep, both within one ``deadline`` (a sweep of a large tree looks at the
        stop flag between files); False when a thread still runs at the end (named in the log)."""
        self._stop.set()
        deadline = as_deadline(deadline, WATCH_STOP_S)
        if self._observer is not None:
            self._observer.stop()
        observed = deadline.join(self._observer, "inotify observer") if self._observer is not None else True
        return deadline.join(self._sweeper, "sweep of the watched directories") and observed

    def describe(self) -> str:
        how = self.inotify_problem or f"inotify + a sweep every {self.config.sweep_s:g} s"
        absent = [str(d) for d in self.directories if not d.is_dir()]
        waiting = f"; waiting for {', '.join(absent)} to exist" if absent else ""
        return (
            f"watching {', '.join(map(str, self.directories))} ({how}); {self.files_taken} module files taken"
            + waiting
        )

    # -- inotify ------------------------------------------------------------------------------------
    def _start_observer(self):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers.inotify import InotifyObserver

        watch = self

        class Handler(FileSystemEventHandler):
            def on_closed(self, event) -> None:
                if not event.is_directory:
                    watch._closed(os.fsdecode(event.src_path))

            def on_moved(self, event) -> None:  # dest_path "": moved out of the watched folders
                if not event.is_directory and event.dest_path:
                    watch._closed(os.fsdecode(event.dest_path))

            def on_modified(self, event) -> None:  # a write (a link made, IN_CREATE, is none: swept)
                if not event.is_directory:
                    watch._written_to(os.fsdecode(event.src_path))

        # full events: a file moved in from an unwatched folder (IN_MOVED_TO alone) is a move into
        # place, not a file created (which may still be being written): taken at once, not left to
        # the sweep -- a burst moved in at once then arrives in the order it was moved
        observer = InotifyObserver(generate_full_events=True)
        self._handler = Handler()
        observer.start()
        self._schedule_new(observer)
        return observer

    def _schedule_new(self, observer) -> None:
        """Watch the folders that exist now and were not watched yet."""
        for d in self.directories:
            if d not in self._scheduled and d.is_dir():
                observer.schedule(self._handler, str(d), recursive=True)
                self._scheduled.add(d)

    def _written_to(self, path: str) -> None:
        with self._lock:
            self._tracker.written_to(path)

    def _closed(self, path: str) -> None:
        with self._lock:
            fresh = self._tracker.closed(path)
        if fresh:
            self._take(path)

    # -- the sweep ----------------------------------------------------------------------------------
    def _sweep_loop(self) -> None:
        while not self._stop.wait(0 if self._first_sweep else self.config.sweep_s):
            try:
                self.sweep()
            except Exception as exc:  # a directory removed under us, a permission: said, then on
                log.exception("sweep failed")
                self._on_error(f"sweeping {', '.join(map(str, self.directories))} failed: {exc}")

    def sweep(self) -> None:
        """Look at every module file once: take those quiet for ``stable_s`` (seen twice alike)."""
        if self._observer is not None and len(self._scheduled) < len(self.directories):
            try:
                self._schedule_new(self._observer)
            except OSError as exc:
                self._on_error(f"cannot watch {', '.join(map(str, self.directories))} with inotify: {exc}")
        files = list(self._module_files())
        if self._first_sweep:  # what was there before: only acquisitions still recent
            self._first_sweep = False
            recent = recent_stems(((p, st.st_mtime_ns) for p, st in files), self._started_ns - int(
                self.config.backlog_s * 1e9))
            with self._lock:
                for p, _ in files:
                    name = parse_lambda_name(p)
                    if name is not None and (os.path.dirname(p), name.stem) not in recent:
                        self._tracker.taken.add(p)  # a past acquisition: never announced
        now = time.time_ns()
        fresh = []
        with self._lock:
            for p, st in files:
                if self._tracker.swept(p, st.st_size, st.st_mtime_ns, now):
                    fresh.append(p)
        for p in fresh:
            if self._stop.is_set():
                return  # not announced: found again by the next start's sweep (its backlog)
            self._take(p)

    def _module_files(self) -> Iterable[tuple[str, os.stat_result]]:
        count = 0
        for d in self.directories:
            for root, _dirs, names in os.walk(d):  # nothing for a folder not made yet
                if self._stop.is_set():
                    return  # stopping: a sweep of thousands of files is not waited for
                for n in names:
                    if not n.endswith(".nxs") or not is_module_file(n):
                        continue
                    p = os.path.join(root, n)
                    try:
                        st = os.stat(p)
                    except OSError:
                        continue  # removed meanwhile
                    count += 1
                    if count > MAX_SWEEP_FILES:
                        return
                    yield p, st

    def _take(self, path: str) -> None:
        try:
            confine(path, self.config.roots, "module file seen in a watched directory")
        except OutsideRootsError as exc:  # e.g. a symlink pointing out of the roots: never announced
            self._on_error(str(exc))
            return
        self.files_taken += 1
        self._on_file(path)


def watch_config(
    directories: Sequence[str], roots: Sequence[str], stable_s: float, sweep_s: float, backlog_s: float
) -> WatchConfig:
    """A WatchConfig from device properties, each bound checked with the value named."""
    for name, value in (("WatchStableTime", stable_s), ("WatchSweepPeriod", sweep_s)):
        if not 0.05 <= value <= 3600:
            raise ConfigError(f"{name} = {value} s is out of range; expected 0.05 to 3600 s")
    if backlog_s < 0:
        raise ConfigError(f"WatchBacklog = {backlog_s} s is negative; expected 0 (none) or more seconds")
    return WatchConfig(tuple(directories), tuple(roots), float(stable_s), float(sweep_s), float(backlog_s))
