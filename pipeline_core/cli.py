"""``xrd-pipeline``: the command line of the pipeline (simulate, integrate, heatmap, demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .config import DEFAULT_WORKERS, MAX_WORKERS
from .errors import PipelineError
from .jobs.commands import JOB_COMMANDS, add_job_commands
from .processing.engine_choice import DEFAULT_ENGINE, ENGINES
from .processing.integrate import DEFAULT_BINS, ERROR_MODELS, IntegrationSettings
from .processing.units import DEFAULT_UNIT, UNITS
from .science.cli_pressure import add_marker_options, add_pressure_command, cmd_pressure, pressure_settings
from .signals import exit_code, stop_signals_raise

EXIT_OK, EXIT_FAILED_FRAMES, EXIT_ERROR = 0, 1, 2


#: ``--polarization none`` (correction off), distinct from the option not being given (None).
POLARIZATION_OFF = "none"


def _polarization(text: str) -> float | str:
    if text.lower() == POLARIZATION_OFF:
        return POLARIZATION_OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or none") from None


def _modules(text: str) -> tuple[int, ...]:
    """``--modules 1,2``: module numbers, each once, 1 to 99 (a Lambda file name holds two digits)."""
    try:
        numbers = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of module numbers such as 1,2") from None
    if not numbers or len(set(numbers)) != len(numbers) or not all(1 <= n <= 99 for n in numbers):
        raise argparse.ArgumentTypeError(f"{text!r}: expected distinct module numbers 1 to 99, such as 1,2")
    return tuple(sorted(numbers))


def build_parser(add_commands: Callable[[Any], None] | None = None) -> argparse.ArgumentParser:
    """The command line; ``add_commands(subparsers)`` adds more subcommands (the Tango layer's demo,
    register, database) with ``subparsers.add_parser`` like the ones here."""
    parser = argparse.ArgumentParser(prog="xrd-pipeline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, for troubleshooting")
    sub = parser.add_subparsers(dest="command", required=True)

    # Every option defaults to None (= not given): the values that apply are resolved in one place,
    # settings_from_args, so an option typed explicitly always beats --config, even when it equals
    # the built-in default.
    p = sub.add_parser("integrate", help="integrate acquisitions into merged NeXus files")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a module/part file, a directory or image files")
    p.add_argument("--config", type=Path, help="beamtime YAML: take PONI, mask, bins, unit... of --detector from it")
    p.add_argument("--detector", help="detector name in --config (default: its only detector)")
    p.add_argument("--poni", type=Path, help="pyFAI calibration (.poni); required without --config")
    p.add_argument("--mask", type=Path, help="mask file (EDF, TIFF, Dioptas .mask, .npy); non-zero = masked")
    p.add_argument("--bins", type=int, help=f"number of radial bins (default {DEFAULT_BINS}, or the config's)")
    p.add_argument("--unit", choices=list(UNITS), help=f"radial unit (default {DEFAULT_UNIT}, or the config's)")
    p.add_argument("--method", help="pyFAI method split,algo,impl (default bbox,csr,cython, or the config's)")
    p.add_argument(
        "--polarization", type=_polarization, help="polarization factor, or none (default 0.99, or the config's)"
    )
    p.add_argument(
        "--no-solid-angle",
        action="store_const",
        const=True,
        help="switch the solid-angle correction off (default on, or the config's)",
    )
    p.add_argument(
        "--error-model",
        choices=["none", *ERROR_MODELS],
        help="compute sigma with this pyFAI error model (default none, or the config's)",
    )
    p.add_argument(
        "--dataset", help="dataset path inside generic HDF5 files (default /entry/data/data, or the config's)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="result file (.nxs) or directory (default: the config's output_directory, or .)",
    )
    p.add_argument("--workers", type=int, help="integration threads (default 1, or the config's)")
    p.add_argument(
        "--modules",
        type=_modules,
        help="the Lambda modules that are on, e.g. 1,2 when module 3 is switched off (default: all three; "
        "a part lacking a module that is on fails, naming the file); recorded in the result",
    )
    p.add_argument(
        "--engine",
        choices=list(ENGINES),
        help="auto (default): the sparse csr engine where it equals pyFAI exactly, else pyFAI's own path; "
        "csr: that engine or an error; pyfai: pyFAI's own path",
    )
    p.add_argument(
        "--engine-cache",
        type=Path,
        metavar="DIR",
        help="keep built pyFAI engines in DIR and load them from there (default: the config's engine_cache, "
        "$XRD_PIPELINE_ENGINE_CACHE, or $XDG_CACHE_HOME/xrd-pipeline/engines)",
    )
    p.add_argument(
        "--no-engine-cache",
        action="store_const",
        const=True,
        help="build every engine; read and write no engine cache",
    )
    p.add_argument(
        "--engine-cache-shared",
        action="store_const",
        const=True,
        help="the engine cache folder is shared on purpose: use entries other users wrote, and a folder "
        "others can write (default: refuse them, as the config's engine_cache_shared: false)",
    )
    add_marker_options(p)  # --marker au [--pressure-scale --reflections --start-pressure]: /processed/pressure

    p = sub.add_parser("heatmap", help="draw a merged file as a frame × radial-axis picture")
    p.add_argument("merged", type=Path)
    p.add_argument("-o", "--output", type=Path, help="PNG file (default: beside the merged file)")
    p.add_argument("--scale", default="sqrt", choices=["linear", "sqrt", "log"])
    p.add_argument(
        "--partial", action="store_true", help="draw a file that is not a finished result (status in the title)"
    )
    p.add_argument("--pressure", action="store_true", help="the file's /processed/pressure beside it, per frame")

    p = sub.add_parser("simulate", help="write a simulated Lambda 2M acquisition (compression ramp)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--frames-per-file", type=int, default=50)
    p.add_argument("--rate", type=float, help="write in real time at this many frames/s, as a detector would")
    p.add_argument("--compression", default="bslz4", choices=["bslz4", "gzip"])
    p.add_argument("--stem", default="ramp_00001")
    p.add_argument("--seed", type=int, default=0)

    add_pressure_command(sub)  # pressure RESULT.nxs --marker au: pipeline_core/science/cli_pressure.py
    add_job_commands(sub)  # reintegrate (integrate's options, as jobs) and jobs: pipeline_core/jobs/commands.py
    if add_commands is not None:
        add_commands(sub)
    return parser


def cmd_integrate(args) -> int:
    from .processing.offline import IntegrationInterrupted, integrate_source
    from .processing.sources import open_sources
    from .progress import Progress

    run = resolve_integrate_options(args)
    settings = run.settings
    pressure = pressure_settings(args)  # a bad marker, scale or reflection is refused before any work
    calibration = [settings.poni_path] + ([settings.mask_path] if settings.mask_path else [])
    sources = open_sources(args.sources, dataset=run.dataset, calibration_files=calibration, modules=run.modules)
    output = run.output
    if output.suffix == ".nxs" and len(sources) > 1:
        raise PipelineError(f"{len(sources)} acquisitions given but one output file {output}; give a directory")
    status = EXIT_OK
    for source in sources:
        out = output if output.suffix == ".nxs" else output / f"{source.name}.nxs"
        progress = Progress(source.name, source.expected_frames())
        try:
            report = integrate_source(
                source, settings, out, workers=run.workers, progress=progress,
                engine=getattr(args, "engine", None) or DEFAULT_ENGINE, pressure=pressure,
            )  # fmt: skip
        except IntegrationInterrupted as exc:
            progress.close()
            print(f"{source.name}: interrupted after {exc.report.describe_partial()}", file=sys.stderr)
            raise
        progress.close()
        print(report.output)
        print(
            f"{source.name}: {report.frames_integrated} frames integrated in {report.elapsed_s:.1f} s "
            f"({report.frames_per_second:.1f} frames/s), status {report.status}",
            file=sys.stderr,
        )
        if report.duplicates_ignored:
            print(f"{source.name}: {report.duplicates_ignored} duplicate frame(s) ignored", file=sys.stderr)
        for f in report.failures:
            print(f"FAILED {f.file}: {f.reason}", file=sys.stderr)
            status = EXIT_FAILED_FRAMES
    return status


@dataclass(frozen=True)
class IntegrateRun:
    """What ``integrate`` runs with, every option resolved (explicit > --config > built-in default)."""

    settings: IntegrationSettings
    workers: int
    output: Path
    dataset: str | None
    #: the Lambda modules that are on (None: every module of a Lambda 2M)
    modules: tuple[int, ...] | None = None


def settings_from_args(args) -> tuple[IntegrationSettings, int]:
    """Integration settings and worker count (see :func:`resolve_integrate_options`)."""
    run = resolve_integrate_options(args)
    return run.settings, run.workers


def resolve_integrate_options(args) -> IntegrateRun:
    """The one place where integrate's options get their values.

    An option given on the command line (not None) always wins; otherwise the --config detector's
    value; otherwise IntegrationSettings' default (the same values the help text names).
    """
    config = detector = None
    if args.config is not None:
        from .config import load_config

        config = load_config(args.config)
        name = args.detector or (next(iter(config.detectors)) if len(config.detectors) == 1 else None)
        if name not in config.detectors:
            raise PipelineError(f"--detector {args.detector!r}: {args.config} defines {', '.join(config.detectors)}")
        detector = config.detectors[name]
        base = detector.integration
    elif args.poni is None:
        raise PipelineError("--poni is required (or --config with a detector's calibration)")
    else:
        base = IntegrationSettings(args.poni)
    given = {"poni_path": args.poni, "mask_path": args.mask, "bins": args.bins, "unit": args.unit}
    changes = {k: v for k, v in given.items() if v is not None}
    if args.method is not None:
        changes["method"] = tuple(m.strip() for m in args.method.split(","))
    if args.polarization is not None:  # "none" is given too: it switches the correction off
        changes["polarization_factor"] = None if args.polarization == POLARIZATION_OFF else args.polarization
    if args.no_solid_angle:
        changes["correct_solid_angle"] = False
    if args.error_model is not None:
        changes["error_model"] = None if args.error_model == "none" else args.error_model
    settings = base.replace(**changes)
    workers = args.workers if args.workers is not None else (config.workers if config else DEFAULT_WORKERS)
    if not 1 <= workers <= MAX_WORKERS:
        raise PipelineError(f"--workers {workers} is out of range; expected 1 to {MAX_WORKERS}")
    if args.output is not None:
        output = args.output
    else:
        output = config.output_directory if config else Path(".")
    dataset = args.dataset if args.dataset is not None else (detector.dataset if detector else None)
    apply_engine_cache_options(args, config)
    return IntegrateRun(settings, workers, output, dataset, getattr(args, "modules", None))


def apply_engine_cache_options(args, config) -> None:
    """``--no-engine-cache`` > ``--engine-cache DIR`` > the config's ``engine_cache`` > the environment
    (shared when ``--engine-cache-shared``, or the config's ``engine_cache_shared`` for its folder):
    made the process's choice (:func:`~.processing.engine_store.choose_folder`), so the engines this
    command builds and the job tasks it starts follow it."""
    from .processing.engine_store import choose_folder

    shared = bool(getattr(args, "engine_cache_shared", None))
    if getattr(args, "no_engine_cache", None):
        choose_folder(None, enabled=False)
    elif getattr(args, "engine_cache", None) is not None:
        choose_folder(args.engine_cache, shared=shared)
    elif config is not None:
        shared = shared or config.engine_cache_shared
        choose_folder(config.engine_cache, enabled=config.engine_cache_enabled, shared=shared)
    else:
        choose_folder(None, shared=shared)


def cmd_heatmap(args) -> int:
    from .heatmap import render_heatmap

    print(render_heatmap(args.merged, args.output, args.scale, allow_partial=args.partial, pressure=args.pressure))
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


COMMANDS = {
    "integrate": cmd_integrate, "heatmap": cmd_heatmap, "simulate": cmd_simulate, "pressure": cmd_pressure,
    **JOB_COMMANDS,
}  # fmt: skip


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
    except ImportError as exc:
        # a signal that lands while a C extension initialises (first `import tango`, say) comes out
        # wrapped in ImportError: it is still a stop, not a broken installation
        if isinstance(exc.__cause__, KeyboardInterrupt):
            print(f"xrd-pipeline {args.command}: interrupted ({exc.__cause__ or 'SIGINT'})", file=sys.stderr)
            return exit_code(exc.__cause__)
        raise


if __name__ == "__main__":
    sys.exit(main())
