"""The command line of the pressure fit: ``integrate --marker ...`` and ``xrd-pipeline pressure``.

``pressure`` opens its input read-only and never writes to it; ``-o OUT.csv`` writes a new file
(never over an existing one, never over the input).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import h5py

from ..errors import ConfigError, OutputError, SourceError
from .markers import marker_names, scales_of
from .nexus_pressure import compute_pressure
from .series import PressureSeries
from .tracker import PressureSettings, parse_reflections

CSV_COLUMNS = ("frame_number", "pressure_gpa", "pressure_sigma_gpa", "lattice_a_angstrom", "reflections_used",
               "reflections_left_out", "reason")  # fmt: skip


def _reflections(text: str) -> tuple[str, ...]:
    try:
        return parse_reflections(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pressure_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pressure in GPa") from None
    if not math.isfinite(value) or not -5.0 <= value <= 1000.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a pressure from -5 to 1000 GPa")
    return value


def add_marker_options(p: argparse.ArgumentParser) -> None:
    """``--marker``, ``--pressure-scale``, ``--reflections``, ``--start-pressure`` (integrate, pressure)."""
    p.add_argument("--marker", help=f"pressure marker: {marker_names()}, or a Dioptas JCPDS file")
    p.add_argument("--pressure-scale", metavar="NAME", help="a peritheos scale of the marker (see --list-scales)")
    p.add_argument("--reflections", type=_reflections, help="reflections to fit, e.g. 111,200 (default: all)")
    p.add_argument("--start-pressure", type=_pressure_value, metavar="GPA",
                   help="pressure of the first frame's starting guess (default 0)")  # fmt: skip


def add_pressure_command(sub) -> None:
    p = sub.add_parser("pressure", help="pressure per frame from a marker's lines in a merged file (read only)")
    p.add_argument("merged", type=Path, nargs="?", help="merged result file (.nxs), ours or Dioptas' layout")
    add_marker_options(p)
    p.add_argument("--wavelength", type=float, metavar="ANGSTROM", help="only for a 2θ file that records none")
    p.add_argument("--json", action="store_true", help="print one JSON object per frame (a list)")
    p.add_argument("-o", "--output", type=Path, help="write a CSV file (a new file)")
    p.add_argument("--list-scales", metavar="MARKER", help="list the pressure scales of a marker and exit")


def pressure_settings(args) -> PressureSettings | None:
    """Settings from ``--marker ...``; None without ``--marker``; the marker is loaded once to refuse
    a bad name, scale or reflection before any work."""
    marker = getattr(args, "marker", None)
    scale, reflections, start = (getattr(args, k, None) for k in ("pressure_scale", "reflections", "start_pressure"))
    given = [o for o, v in (("--pressure-scale", scale), ("--reflections", reflections),
                            ("--start-pressure", start)) if v is not None]  # fmt: skip
    if marker is None:
        if given:
            raise ConfigError(f"{', '.join(given)} given without --marker: name the marker (e.g. --marker au)")
        return None
    settings = PressureSettings(marker, scale, reflections, start or 0.0)
    settings.load()
    return settings


def cmd_pressure(args) -> int:
    if args.list_scales:
        default, names = scales_of(args.list_scales)
        for name in names:
            print(f"{name}{'  (default)' if name == default else ''}")
        return 0
    if args.merged is None or args.marker is None:
        raise ConfigError("give a merged file and --marker (or --list-scales MARKER)")
    settings = pressure_settings(args)
    assert settings is not None
    if args.wavelength is not None and not 0.01 <= args.wavelength <= 10:
        raise ConfigError(f"--wavelength {args.wavelength}: expected 0.01 to 10 Å")
    if args.output is not None:
        _check_output(args.output, args.merged)
    try:
        h5 = h5py.File(args.merged, "r")
    except OSError as exc:
        raise SourceError(f"{args.merged} cannot be read as a merged file ({exc})") from exc
    with h5:
        series = compute_pressure(h5, settings, args.wavelength)
    marker = settings.load()
    if args.output is not None:
        write_csv(args.output, series)
    if args.json:
        print(json.dumps(series.records()))
    elif args.output is None:
        print_table(series)
    good = sum(1 for p in series.pressure if math.isfinite(p))
    print(f"{args.merged}: {good} of {len(series)} frames with a pressure; {marker.description} on "
          f"{marker.scale.name} [{marker.scale.reference}]", file=sys.stderr)  # fmt: skip
    for i in range(len(series)):
        if series.reason(i):
            print(f"frame {series.frame_number[i]}: no pressure: {series.reason(i)}", file=sys.stderr)
    return 0


def _check_output(out: Path, merged: Path) -> None:
    if out.exists() and merged.exists() and out.resolve() == merged.resolve():
        raise OutputError(f"-o {out} is the input file: pressure never modifies its input; choose another name")
    if out.exists():
        raise OutputError(f"-o {out} exists already; choose another name (results are never overwritten)")


def print_table(series: PressureSeries) -> None:
    print(f"{'frame':>8} {'P (GPa)':>9} {'sigma':>7} {'a (Å)':>9}  used")
    for i, rec in enumerate(series.records()):
        p, s, a = rec["pressure_gpa"], rec["pressure_sigma_gpa"], rec["lattice_a_angstrom"]
        if p is None:
            print(f"{rec['frame_number']:>8} {'NaN':>9} {'':>7} {'':>9}  {series.reason(i)}")
        else:
            print(f"{rec['frame_number']:>8} {p:9.3f} {s:7.3f} {a:9.5f}  {','.join(rec['reflections_used'])}")


def write_csv(path: Path, series: PressureSeries) -> None:
    """The per-frame table as CSV: written to a fresh temporary beside ``path`` (``mkstemp``: never
    someone else's ``.part``), then hard-linked to ``path``, which fails if ``path`` exists: a file
    that appeared there since ``-o`` was checked is never overwritten, and no half file is ever seen."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc})") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes it 0600: a results file others may read
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for i, rec in enumerate(series.records()):
                writer.writerow([
                    rec["frame_number"], *("" if rec[k] is None else repr(rec[k]) for k in CSV_COLUMNS[1:4]),
                    ",".join(rec["reflections_used"]), series.left_out_text(i), series.reason(i),
                ])  # fmt: skip
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(f"-o {path} exists already (it appeared during the fit); choose another name "
                          "(results are never overwritten)") from None  # fmt: skip
    except OSError as exc:
        raise OutputError(f"cannot write {path} ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
