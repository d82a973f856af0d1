"""Files the web server shows: folders browsed inside the Stitcher's roots, and the merged results.

Every path a visitor names is resolved (``..`` collapsed, symbolic links followed) and refused unless
it lies inside the roots (:func:`pipeline_core.paths.confine`); a listing leaves out entries that are
symbolic links out of them. Results are the ``.nxs`` files of the Merger's ``OutputDirectory``,
named by one file name (no folder), with their status read from the file.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import Any

from pipeline_core.paths import OutsideRootsError, confine, file_name_problem, inside

#: status of a merged file that no reader could open (being written, or not a merged file)
UNREADABLE = "unreadable"


class Refused(ValueError):
    """A visitor's path or name is refused; the message names it and what was expected."""


def browse(roots: list[str], path: str, what: str) -> dict[str, Any]:
    """The entries of folder ``path`` (the roots themselves when ``path`` is empty)."""
    if not roots:
        raise Refused(f"the Stitcher has no {what} roots configured: nothing can be browsed")
    if not path:
        return {"path": "", "parent": None, "entries": [_entry(Path(r), Path(r).name or r) for r in roots]}
    try:
        folder = confine(path, roots, what)
    except OutsideRootsError as exc:
        raise Refused(f"{exc}; choose a folder under {', '.join(roots)}") from None
    if not folder.is_dir():
        raise Refused(f"{path} is not a folder; expected a folder under {', '.join(roots)}")
    found = (_entry(p, p.name) for p in sorted(folder.iterdir()) if not p.name.startswith(".") and inside(p, roots))
    entries = [e for e in found if e is not None]
    entries.sort(key=lambda e: (not e["folder"], e["name"]))
    at_root = any(folder == Path(r).resolve() for r in roots)
    return {"path": str(folder), "parent": "" if at_root else str(folder.parent), "entries": entries}


def _entry(path: Path, name: str) -> dict[str, Any] | None:
    """One row of a listing; None (left out) for what cannot be looked at: a dangling link, no permission."""
    try:
        folder = path.is_dir()
        size = 0 if folder else path.stat().st_size
    except OSError:
        return None
    return {"name": name, "path": str(path.resolve()), "folder": folder, "size": size}


def chosen_file(roots: list[str], path: str, what: str) -> str:
    """``path`` resolved, if it is a file inside ``roots``; Refused naming the roots otherwise."""
    try:
        resolved = confine(path, roots, what)
    except OutsideRootsError as exc:
        raise Refused(f"{exc}; choose a file under {', '.join(roots)}") from None
    if not resolved.is_file():
        raise Refused(f"{what} {path} is not a file")
    return str(resolved)


def merged_status(path: Path) -> tuple[str, bool]:
    """(status, has a /processed/pressure group) of a merged file."""
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as h5:
            status = h5["processed/process/status"][()]
            return (status.decode() if isinstance(status, bytes) else str(status)), "processed/pressure" in h5
    except (OSError, KeyError, ValueError, RuntimeError):
        return UNREADABLE, False


def results(output: Path) -> list[dict[str, Any]]:
    """The merged files of ``output``, newest first, with status and whether they carry pressure."""
    found = []
    for path in output.glob("*.nxs"):
        if path.is_symlink() or not path.is_file():
            continue
        status, pressure = merged_status(path)
        stat = path.stat()
        found.append({"name": path.name, "status": status, "size": stat.st_size, "mtime": stat.st_mtime,
                      "pressure": pressure})
    return sorted(found, key=lambda r: (-r["mtime"], r["name"]))


def result_file(output: Path, name: str) -> Path:
    """The merged file ``name`` (one file name) of ``output``; Refused otherwise."""
    problem = file_name_problem(name)
    if problem or not name.endswith(".nxs"):
        raise Refused(f"result {name!r}: {problem or 'expected the name of a .nxs file'} of {output}")
    try:
        path = confine(output / name, [output], "result")
    except OutsideRootsError as exc:
        raise Refused(str(exc)) from None
    if not path.is_file():
        raise Refused(f"result {name!r}: no such file in {output}")
    return path


def heatmap_png(path: Path) -> bytes:
    """The heatmap of a merged file (``xrd-pipeline heatmap``'s picture), drawn in a scratch folder."""
    from pipeline_core.errors import PipelineError
    from pipeline_core.heatmap import render_heatmap

    with tempfile.TemporaryDirectory(prefix="xrd-web-") as scratch:
        try:
            png = render_heatmap(path, Path(scratch) / (path.stem + ".png"), allow_partial=True)
        except PipelineError as exc:
            raise Refused(f"{path.name}: {exc}") from None
        return png.read_bytes()


def pressure_csv(path: Path) -> str:
    """The ``/processed/pressure`` group as CSV: one column per 1-D dataset (unit in the header), the
    frame number first; read as the file has it, so a column the Merger adds later comes along."""
    import h5py

    with h5py.File(path, "r", locking=False) as h5:
        group = h5.get("processed/pressure")
        if group is None:
            raise Refused(f"{path.name} has no /processed/pressure group (no pressure marker was set)")
        columns = {}
        names = sorted(group, key=lambda n: (n != "frame_number", n))  # frame number first, as in a table
        for name, item in ((n, group[n]) for n in names):
            if isinstance(item, h5py.Dataset) and item.ndim == 1:
                unit = item.attrs.get("units", "")
                unit = unit.decode() if isinstance(unit, bytes) else str(unit)
                columns[f"{name} ({unit})" if unit else name] = item[()]
    if not columns:
        raise Refused(f"{path.name}: /processed/pressure holds no 1-D dataset")
    rows = min(len(v) for v in columns.values())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for i in range(rows):
        writer.writerow([_cell(v[i]) for v in columns.values()])
    return out.getvalue()


def _cell(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else (value.item() if hasattr(value, "item") else value)
