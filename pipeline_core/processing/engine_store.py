"""pyFAI's built engine kept on disk, so a geometry's CSR matrix is built once, not once per process.

Why: building pyFAI's bbox/csr coefficients for a Lambda 2M frame takes 2-3 s (a child process that
imports pyFAI and builds, :mod:`.engine_build`); every ``integrate``, every reintegration task and
every restarted Integrator built it again for the same PONI and mask. An entry here holds what
:class:`~.engine_build.BuiltEngine` holds (the CSR matrix, bin centres, mask, solid angle,
polarization, radial axis: ~100 MB for a Lambda 2M) and loads in a fraction of a second.

An entry is one file ``<key digest>.engine``:

* a magic line, then one JSON line: the **key itself** (what the coefficients depend on: the PONI's
  values as pyFAI reads them, the digest of the mask integrated with, bins, unit, method,
  corrections, frame shape, pyFAI's version, this format's version), the arrays' names, dtypes and
  shapes, and the **SHA-256 of the payload**; then the arrays' raw bytes.
* A load compares the stored key with the wanted one (a file copied under another name, or a
  digest collision, is never used), checks the announced arrays (known names, plain number types,
  sizes that add up to the file's length) before allocating any, then that the payload's digest
  matches (a bit flip, a truncated copy); anything else, whatever the error, is a miss: the caller
  builds again and :meth:`EngineStore.save` replaces the bad file.
* The checksum catches accidents, not other writers: an entry's digest sits in the file it protects.
  So a folder or entry that another user owns, or that its group or others can write, is refused
  (a warning, a miss, and nothing written there; :mod:`.cache_trust`) unless the folder is marked
  shared on purpose (``engine_cache_shared: true``, ``--engine-cache-shared``): then everyone who
  can write it is trusted by everyone who uses it.
* Writes are atomic: a temporary file in the same folder, flushed and fsynced, then ``os.replace``;
  several processes (job tasks on a shared file system) writing the same entry leave one valid
  file, whichever came last. A reader holding the old file keeps reading the old inode.
* The folder is bounded (``max_bytes``): after a save, the least recently used entries (a load
  touches its file) are removed until the rest fit; temporary files of writers killed mid-write
  are removed once they are an hour old.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import ConfigError
from .cache_trust import untrusted_because
from .engine_build import BuiltEngine

log = logging.getLogger(__name__)

#: Bumped whenever what an entry holds, or how the engine is built from pyFAI, changes.
FORMAT_VERSION = 1
MAGIC = b"XRD-PIPELINE-ENGINE\n"
SUFFIX = ".engine"
#: Environment variable: the folder of the engine cache, or ``off`` (set by ``integrate --engine-cache``
#: / ``--no-engine-cache`` so that job tasks and builder children started from it follow the choice).
ENV_VAR = "XRD_PIPELINE_ENGINE_CACHE"
OFF = "off"
#: Environment variable: ``1`` when the folder in :data:`ENV_VAR` is shared on purpose (``--engine-cache-shared``)
SHARED_ENV_VAR = "XRD_PIPELINE_ENGINE_CACHE_SHARED"
#: ~20 Lambda 2M geometries
DEFAULT_MAX_BYTES = 2 * 1024**3
#: a temporary file older than this belongs to a writer that died
_STALE_TMP_S = 3600.0
_MAX_HEADER = 1 << 20
_HEADER_FIELDS = ("csr_module", "image_size", "empty", "weighted_average", "check_mask")
_ARRAY_NAMES = ("data", "indices", "indptr", "bin_centers", "cmask", "solidangle", "polarization", "radial")
#: numpy dtype kinds an entry may hold: bool, signed and unsigned integers, floats
_NUMBER_KINDS = "biuf"
_TRUE = ("1", "true", "yes", "on")


def default_folder() -> Path:
    """``$XDG_CACHE_HOME/xrd-pipeline/engines`` (``~/.cache/...`` when XDG_CACHE_HOME is not set)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xrd-pipeline" / "engines"


def default_store() -> EngineStore | None:
    """The store of this process: the folder in ``$XRD_PIPELINE_ENGINE_CACHE``, none when it says ``off``,
    else :func:`default_folder`."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() == OFF:
        return None
    shared = os.environ.get(SHARED_ENV_VAR, "").strip().lower() in _TRUE
    return EngineStore(Path(value) if value else default_folder(), shared=shared)


def store_for(folder: str, shared: bool = False) -> EngineStore | None:
    """The store a device's ``EngineCache`` property names: ``""`` the process's (its environment,
    else :func:`default_folder`), ``off`` none, else that absolute folder (a relative one would
    depend on the directory Starter happens to start the server in: refused, naming the value)."""
    value = str(folder or "").strip()
    if not value:
        store = default_store()
        if store is not None and shared:
            store.shared = True
        return store
    if value.lower() == OFF:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(
            f"engine cache folder {value!r} is not an absolute path; expected an absolute folder, 'off', or "
            "empty (the process's default)"
        )
    return EngineStore(path, shared=shared)


def choose_folder(folder: str | Path | None, enabled: bool = True, shared: bool = False) -> None:
    """Make a command's choice (``--engine-cache DIR`` / ``--no-engine-cache`` / the config's
    ``engine_cache`` / ``--engine-cache-shared``) the process's: engines built from now on, and
    processes started from this one (job tasks, builder children), use it. ``folder`` None keeps the
    folder the environment says (and marks it shared when ``shared``); a new folder is shared only
    when ``shared`` says so, never because the environment said so of another folder."""
    if not enabled:
        os.environ[ENV_VAR] = OFF
        return
    if folder is not None:
        os.environ[ENV_VAR] = str(Path(folder).expanduser().absolute())
        os.environ.pop(SHARED_ENV_VAR, None)
    if shared:
        os.environ[SHARED_ENV_VAR] = "1"


def engine_key(settings_dict: dict, poni_values: str, mask: np.ndarray, frame_shape: tuple[int, int]) -> dict:
    """What pyFAI's coefficients depend on, as a JSON-able value (paths are not in it: the same PONI
    values and mask pixels from another file give the same engine)."""
    import pyFAI

    settings = {k: v for k, v in settings_dict.items() if k not in ("poni_path", "mask_path")}
    mask = np.asarray(mask, dtype=bool)
    digest = hashlib.sha256(repr(tuple(mask.shape)).encode())
    digest.update(np.packbits(mask).tobytes())
    return {
        "format": FORMAT_VERSION,
        "pyfai": str(pyFAI.version),
        "settings": settings,
        "poni": poni_values,
        "mask": digest.hexdigest(),
        "frame_shape": [int(n) for n in frame_shape],
    }


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LoadResult:
    """What a load found: the engine, or None and why not (``missing``, or what was wrong with the file)."""

    built: BuiltEngine | None
    reason: str = ""


class EngineStore:
    """A folder of built engines; see the module docstring. Safe to share between processes; shared
    between users only when ``shared`` says everyone who can write it is trusted."""

    def __init__(self, folder: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, shared: bool = False):
        self.folder = Path(folder)
        if int(max_bytes) < 1:
            raise ConfigError(f"engine cache size {max_bytes} bytes; expected a positive number of bytes")
        self.max_bytes = int(max_bytes)
        self.shared = bool(shared)

    def _refusal(self, what: str, path: Path, st: os.stat_result) -> str | None:
        """Why ``path`` (the folder, or an entry) is not trusted, naming it; None when it is."""
        why = None if self.shared else untrusted_because(st)
        if why is None:
            return None
        return (f"engine cache {what} {path} is {why}; another user could have written it (mark the folder "
                "shared with engine_cache_shared: true or --engine-cache-shared if everyone who can write it "
                "is trusted)")

    def path_for(self, key: dict) -> Path:
        return self.folder / (key_digest(key) + SUFFIX)

    # -- loading ---------------------------------------------------------------------------------
    def load(self, key: dict) -> LoadResult:
        """The engine stored for ``key``, or None with the reason (never a file that does not verify)."""
        path = self.path_for(key)
        try:
            refusal = self._refusal("folder", self.folder, os.stat(self.folder))
            if refusal is None:
                with open(path, "rb") as fh:
                    refusal = self._refusal("entry", path, os.fstat(fh.fileno()))
                    built = _read_entry(fh, key) if refusal is None else None
        except FileNotFoundError:
            return LoadResult(None, "missing")
        except Exception as exc:  # unreadable, corrupt, another key, or a reader's bug: a build, never a failure
            reason = str(exc) or type(exc).__name__
            log.warning("engine cache entry %s is not used (%s): building again", path, reason)
            return LoadResult(None, reason)
        if refusal is not None:
            log.warning("%s: not used, building again", refusal)
            return LoadResult(None, refusal)
        with contextlib.suppress(OSError):
            os.utime(path)  # least recently used is evicted first
        return LoadResult(built)

    # -- saving ----------------------------------------------------------------------------------
    def save(self, key: dict, built: BuiltEngine) -> Path | None:
        """Store ``built`` under ``key`` atomically; None (and a log line) when the folder refuses it:
        a cache that cannot be written costs a build next time, never a failed integration."""
        path = self.path_for(key)
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o755)  # never group-writable, whatever the umask
            refusal = self._refusal("folder", self.folder, os.stat(self.folder))
            if refusal is not None:
                log.warning("%s: no engine is stored there", refusal)
                return None
            fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=self.folder)
            os.fchmod(fd, 0o644)  # readable by the others who share the folder, as a file they wrote
            with os.fdopen(fd, "wb") as fh:
                _write_entry(fh, key, built)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            log.warning("engine cache %s: cannot store an engine (%s); it will be built again next time",
                        self.folder, exc)
            return None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        self.evict(keep=path)
        return path

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Remove least recently used entries until the folder holds at most ``max_bytes`` (``keep``,
        the entry just written, stays even when it alone is larger), and dead writers' temporary files."""
        entries = []
        now = time.time()
        removed: list[Path] = []
        try:
            listing = list(os.scandir(self.folder))
        except OSError:
            return removed
        for e in listing:
            try:
                st = e.stat()
            except OSError:  # removed by another process meanwhile
                continue
            if e.name.endswith(".tmp") and now - st.st_mtime > _STALE_TMP_S:
                if _unlink(Path(e.path)):
                    removed.append(Path(e.path))
            elif e.name.endswith(SUFFIX):
                entries.append((st.st_mtime, st.st_size, Path(e.path)))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if keep is not None and path == keep:
                continue
            if _unlink(path):
                removed.append(path)
            total -= size
        return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


def _bytes_of(a: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy."""
    return a.reshape(-1).view(np.uint8).data


def _write_entry(fh: IO[bytes], key: dict, built: BuiltEngine) -> None:
    arrays = {name: np.ascontiguousarray(getattr(built, name)) for name in _ARRAY_NAMES
              if getattr(built, name) is not None}  # fmt: skip
    digest = hashlib.sha256()
    for a in arrays.values():
        digest.update(_bytes_of(a))
    header = {
        "key": key,
        "engine": {name: getattr(built, name) for name in _HEADER_FIELDS},
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()],
        "sha256": digest.hexdigest(),
    }
    fh.write(MAGIC)
    fh.write(json.dumps(header, sort_keys=True).encode() + b"\n")
    for a in arrays.values():
        fh.write(_bytes_of(a))


def _read_into(fh: IO[bytes], view: memoryview) -> int:
    """Fill ``view`` from ``fh``; the number of bytes read (less only at the end of the file)."""
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])  # type: ignore[attr-defined]  # binary files have readinto
        if not n:
            break
        got += n
    return got


def _announced_arrays(announced: Any, held: int) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    """The arrays a header announces, checked before any is allocated: known names, each once, plain
    number types, whole dimensions >= 0, and byte counts that add up to the ``held`` bytes after the
    header. Why before: a damaged header announcing a 400 TB array made ``np.empty`` raise
    MemoryError, and a geometry whose entry was damaged so could never be integrated again."""
    specs: list[tuple[str, np.dtype, tuple[int, ...]]] = []
    total = 0
    for name, dtype_text, shape in announced:
        if name not in _ARRAY_NAMES or name in (s[0] for s in specs):
            raise ValueError(f"array {name!r} is unknown or announced twice; expected each of "
                             f"{', '.join(_ARRAY_NAMES)} at most once")
        dtype = np.dtype(dtype_text)
        if dtype.kind not in _NUMBER_KINDS or dtype.hasobject:
            raise ValueError(f"array data {name} has dtype {dtype_text!r}; expected bool, integer or float")
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise ValueError(f"array data {name} has shape {shape!r}; expected a list of whole numbers >= 0")
        total += dtype.itemsize * math.prod(shape)
        specs.append((name, dtype, tuple(shape)))
    if total != held:
        raise ValueError(f"array data truncated or padded: the header announces {total} bytes, the file holds "
                         f"{held} after its header; expected the same")
    return specs


def _read_entry(fh: IO[bytes], key: dict) -> BuiltEngine:
    if fh.read(len(MAGIC)) != MAGIC:
        raise ValueError("not an engine cache file (bad magic line)")
    line = fh.readline(_MAX_HEADER)
    if not line.endswith(b"\n"):
        raise ValueError("header line truncated")
    header = json.loads(line)
    if header["key"] != key:
        raise ValueError("its stored key is not the one asked for")
    here = fh.tell()
    held = fh.seek(0, os.SEEK_END) - here
    fh.seek(here)
    digest = hashlib.sha256()
    arrays: dict[str, Any] = dict.fromkeys(_ARRAY_NAMES)
    for name, dtype, shape in _announced_arrays(header["arrays"], held):
        a = np.empty(shape, dtype)
        view = _bytes_of(a)
        got = _read_into(fh, view)
        if got != a.nbytes:
            raise ValueError(f"payload truncated in array {name} ({got} of {a.nbytes} bytes)")
        digest.update(view)
        arrays[name] = a
    if fh.read(1):
        raise ValueError("bytes after the announced payload")
    if digest.hexdigest() != header["sha256"]:
        raise ValueError("payload checksum mismatch (a bit flipped or the file was overwritten)")
    for required in ("data", "indices", "indptr", "bin_centers", "radial"):
        if arrays[required] is None:
            raise ValueError(f"array {required} missing")
    engine = header["engine"]
    return BuiltEngine(str(engine["csr_module"]), int(engine["image_size"]), float(engine["empty"]),
                       bool(engine["weighted_average"]), bool(engine["check_mask"]), **arrays)
