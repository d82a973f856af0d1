"""``xrd-pipeline``: the command line of the pipeline (simulate, integrate, heatmap, demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import PipelineError
from .integrate import DEFAULT_BINS, DEFAULT_METHOD, ERROR_MODELS, UNITS, IntegrationSettings
from .signals import exit_code, stop_signals_raise

EXIT_OK, EXIT_FAILED_FRAMES, EXIT_ERROR = 0, 1, 2


def _none_or_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _none_or_str(text: str) -> str | None:
    return None if text.lower() == "none" else text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrd-pipeline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, for troubleshooting")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("integrate", help="integrate acquisitions into merged NeXus files")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a module/part file, a directory or image files")
    p.add_argument("--config", type=Path, help="beamtime YAML: take PONI, mask, bins, unit... of --detector from it")
    p.add_argument("--detector", help="detector name in --config (default: its only detector)")
    p.add_argument("--poni", type=Path, help="pyFAI calibration (.poni); required without --config")
    p.add_argument("--mask", type=Path, help="mask file (EDF, TIFF, Dioptas .mask, .npy); non-zero = masked")
    p.add_argument("--bins", type=int, help=f"number of radial bins (default {DEFAULT_BINS})")
    p.add_argument("--unit", choices=list(UNITS), help="radial unit (default 2th_deg)")
    p.add_argument(
        "--method", default=",".join(DEFAULT_METHOD), help="pyFAI method split,algo,impl (default bbox,csr,cython)"
    )
    p.add_argument(
        "--polarization", type=_none_or_float, default=0.99, help="polarization factor, or none (default 0.99)"
    )
    p.add_argument("--no-solid-angle", action="store_true", help="switch the solid-angle correction off")
    p.add_argument(
        "--error-model",
        type=_none_or_str,
        default=None,
        choices=[None, *ERROR_MODELS],
        help="compute sigma with this pyFAI error model (default none)",
    )
    p.add_argument("--dataset", help="dataset path inside generic HDF5 files (default /entry/data/data)")
    p.add_argument("-o", "--output", type=Path, default=Path("."), help="result file (.nxs) or directory (default .)")
    p.add_argument("--workers", type=int, help="integration threads (default 1, or the config's)")

    p = sub.add_parser("heatmap", help="draw a merged file as a frame × radial-axis picture")
    p.add_argument("merged", type=Path)
    p.add_argument("-o", "--output", type=Path, help="PNG file (default: beside the merged file)")
    p.add_argument("--scale", default="sqrt", choices=["linear", "sqrt", "log"])

    p = sub.add_parser("simulate", help="write a simulated Lambda 2M acquisition (compression ramp)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--frames-per-file", type=int, default=50)
    p.add_argument("--rate", type=float, help="write in real time at this many frames/s, as a detector would")
    p.add_argument("--compression", default="bslz4", choices=["bslz4", "gzip"])
    p.add_argument("--stem", default="ramp_00001")
    p.add_argument("--seed", type=int, default=0)

    return parser


def cmd_integrate(args) -> int:
    from .offline import integrate_source
    from .progress import Progress
    from .sources import open_sources

    settings, workers = settings_from_args(args)
    if workers < 1 or workers > 64:
        raise PipelineError(f"--workers {workers} is out of range; expected 1 to 64")
    sources = open_sources(args.sources, dataset=args.dataset)
    if args.output.suffix == ".nxs" and len(sources) > 1:
        raise PipelineError(f"{len(sources)} acquisitions given but one output file {args.output}; give a directory")
    status = EXIT_OK
    for source in sources:
        out = args.output if args.output.suffix == ".nxs" else args.output / f"{source.name}.nxs"
        progress = Progress(source.name, source.expected_frames())
        try:
            report = integrate_source(source, settings, out, workers=workers, progress=progress)
        finally:
            progress.close()
        print(report.output)
        print(
            f"{source.name}: {report.frames_integrated} frames integrated in {report.elapsed_s:.1f} s "
            f"({report.frames_per_second:.1f} frames/s)",
            file=sys.stderr,
        )
        if report.duplicates_ignored:
            print(f"{source.name}: {report.duplicates_ignored} duplicate frame(s) ignored", file=sys.stderr)
        for f in report.failures:
            print(f"FAILED {f.file}: {f.reason}", file=sys.stderr)
            status = EXIT_FAILED_FRAMES
    return status


def settings_from_args(args) -> tuple[IntegrationSettings, int]:
    """Integration settings from --config/--detector, overridden by any option given explicitly."""
    explicit = {
        "poni_path": args.poni,
        "mask_path": args.mask,
        "bins": args.bins,
        "unit": args.unit,
    }
    if args.config is not None:
        from .config import load_config

        config = load_config(args.config)
        name = args.detector or (next(iter(config.detectors)) if len(config.detectors) == 1 else None)
        if name not in config.detectors:
            raise PipelineError(f"--detector {args.detector!r}: {args.config} defines {', '.join(config.detectors)}")
        base = config.detectors[name].integration
        workers = config.workers
    else:
        if args.poni is None:
            raise PipelineError("--poni is required (or --config with a detector's calibration)")
        base = IntegrationSettings(args.poni)
        workers = 1
    changes = {k: v for k, v in explicit.items() if v is not None}
    changes.update(
        method=tuple(args.method.split(",")),
        polarization_factor=args.polarization,
        correct_solid_angle=not args.no_solid_angle,
        error_model=args.error_model,
    )
    if args.config is not None:  # options the user did not type keep the config's values
        defaults = {
            "method": ",".join(DEFAULT_METHOD),
            "polarization": 0.99,
            "no_solid_angle": False,
            "error_model": None,
        }
        for opt, key in (
            ("method", "method"),
            ("polarization", "polarization_factor"),
            ("no_solid_angle", "correct_solid_angle"),
            ("error_model", "error_model"),
        ):
            if getattr(args, opt) == defaults[opt]:
                changes.pop(key)
    return base.replace(**changes), args.workers if args.workers is not None else workers


def cmd_heatmap(args) -> int:
    from .heatmap import render_heatmap

    print(render_heatmap(args.merged, args.output, args.scale))
    return EXIT_OK


def cmd_simulate(args) -> int:
    from .simulate import simulate_acquisition

    acq = simulate_acquisition(
        args.outdir,
        frames=args.frames,
        frames_per_file=args.frames_per_file,
        compression=args.compression,
        stem=args.stem,
        rate=args.rate,
        seed=args.seed,
    )
    print(
        f"{acq.n_frames} frames in {len(acq.module_files[0])} parts x {len(acq.module_files)} modules: {acq.directory}"
    )
    print(f"calibration: {acq.poni_path}")
    print(f"mask:        {acq.mask_path}")
    return EXIT_OK


COMMANDS = {"integrate": cmd_integrate, "heatmap": cmd_heatmap, "simulate": cmd_simulate}


def main(
    argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None, extra_commands: dict | None = None
) -> int:
    """Run a command; ``parser``/``extra_commands`` let the Tango layer add its commands (demo, register)."""
    args = (parser or build_parser()).parse_args(argv)
    commands = {**COMMANDS, **(extra_commands or {})}
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # silx announces at every start that OpenCL is not installed; pyFAI's CPU path needs none
    logging.getLogger("silx.opencl.common").setLevel(logging.ERROR)
    try:
        # SIGTERM/SIGHUP (service managers, closed terminals) stop us exactly like Ctrl-C
        with stop_signals_raise():
            return commands[args.command](args)
    except PipelineError as exc:
        print(f"xrd-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        print(f"xrd-pipeline {args.command}: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
