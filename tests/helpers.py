"""Helpers the tests share: small Lambda-layout files, a Dioptas-rule stitch, waiting, real servers.

Imported by tests as ``from tests.helpers import ...`` (conftest.py only holds fixtures and hooks).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_DIR = REPO.parent / "shared" / "data" / "p02_2_lambda_2020"
REAL_STEM = "testasapo1_1009_00002"

#: A small 3-module detector with the same geometry idea as the Lambda 2M (stacked rows, x shifts).
SMALL_MODULE = (20, 30)
SMALL_OFFSETS = ((0.0, 0.0), (-2.0, 24.0), (-2.0, 47.0))
SMALL_FRAME = (67, 32)

SMALL_PONI = """# small test detector
poni_version: 2
Detector: Detector
Detector_config: {"pixel1": 5.5e-05, "pixel2": 5.5e-05, "max_shape": null}
Distance: 0.01
Poni1: 0.0018
Poni2: 0.0009
Rot1: 0.0
Rot2: 0.0
Rot3: 0.0
Wavelength: 4.836e-11
"""


def write_module(
    path: Path,
    frames: np.ndarray,
    offset: tuple[float, float],
    first_number: int = 1,
    compression: str = "gzip",
    pixel_mask: np.ndarray | None = None,
    description_as_array: bool = True,
    total_frames: int | None = None,
) -> Path:
    """Write one Lambda module file the way the detector does (independent of pipeline_core)."""
    comp = {"gzip": {"compression": "gzip", "compression_opts": 2}, "bslz4": hdf5plugin.Bitshuffle(cname="lz4")}[
        compression
    ]
    with h5py.File(path, "w") as h5:
        det = h5.create_group("entry/instrument/detector")
        h5["entry"].attrs["NX_class"] = "NXentry"
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]), **comp)
        if description_as_array:
            det.create_dataset(
                "description", data=np.array([b"Lambda"], dtype=object), dtype=h5py.string_dtype("ascii")
            )
        else:
            det["description"] = "Lambda"
        det.create_dataset("translation/distance", data=np.array([offset[0], offset[1], 0.0], np.float32))
        det.create_dataset("sequence_number", data=np.arange(first_number, first_number + len(frames), dtype=np.int32))
        if pixel_mask is not None:
            det.create_dataset("pixel_mask", data=pixel_mask[None].astype(np.uint32))
        if total_frames is not None:  # the frames the acquisition will have, as the detector records it
            det.create_dataset("collection/frame_numbers", data=np.array([total_frames], np.uint32))
    return path


def write_small_acquisition(
    directory: Path,
    stem: str = "scan_00001",
    n_parts: int = 2,
    frames_per_part: int = 3,
    module_naming: str = "m{k}_part{p:05d}",
    compression: str = "gzip",
    dtype=np.int16,
    seed: int = 0,
    record_total: bool = False,
) -> dict:
    """A tiny 3-module acquisition; returns the module frames so tests can check stitching."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    modules: dict[int, list[np.ndarray]] = {1: [], 2: [], 3: []}
    files = []
    for p in range(n_parts):
        for k, offset in enumerate(SMALL_OFFSETS, start=1):
            frames = rng.integers(1, 1000, size=(frames_per_part, *SMALL_MODULE)).astype(dtype)
            modules[k].append(frames)
            name = f"{stem}_{module_naming.format(k=k, p=p)}.nxs"
            total = n_parts * frames_per_part if record_total else None
            files.append(
                write_module(directory / name, frames, offset, 1 + p * frames_per_part, compression, total_frames=total)
            )
    return {"modules": modules, "files": files, "stem": stem, "directory": directory}


def pattern_batch(settings, numbers, part: int = 0, total: int = 8, bins: int = 4):
    """A pattern batch of scan "scan" as an Integrator sends it: row k holds the value of its frame
    number (so a row in the wrong place shows), ``bins`` bins, the part's module-1 file named."""
    from pipeline_core.messages import PatternBatch

    n = len(numbers)
    return PatternBatch(
        f"scan:{part}:{numbers[0]}", "scan", "lambda", "int0", part, "fp", np.array(numbers), np.arange(n),
        np.tile(np.array(numbers, np.float32)[:, None], (1, bins)), np.arange(float(bins)),
        settings=settings.to_dict(), raw_file=f"/raw/scan_m1_part{part:05d}.nxs", total_frames=total,
    )  # fmt: skip


def dioptas_stitch(module_frames: list[np.ndarray], offsets) -> np.ndarray:
    """Dioptas' rule written out step by step from lambda-format.md, independent of pipeline_core."""
    xs = [int(o[0]) for o in offsets]
    ys = [int(o[1]) for o in offsets]
    xs = [x - min(xs) for x in xs]
    ys = [y - ys[0] for y in ys]
    rows, cols = module_frames[0].shape
    full = np.zeros((max(y + rows for y in ys), max(x + cols for x in xs)), dtype=module_frames[0].dtype)
    for frame, x, y in zip(module_frames, xs, ys, strict=True):
        full[y : y + rows, x : x + cols] = frame
    return full[::-1]


def wait_for(predicate, timeout_s: float = 30.0, what="condition") -> None:
    """Poll until ``predicate()`` is true; fail the test naming ``what`` after ``timeout_s`` (a callable
    ``what`` is called then, so the message shows the values at the time-out, not at the start)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what() if callable(what) else what}")


@contextlib.contextmanager
def real_servers(tmp: Path, specs):
    """The embedded Tango database plus one real process per server of ``specs`` (registration
    DeviceSpecs), connected upstream; yields TANGO_HOST; every process stopped afterwards.

    Spawned processes, unlike MultiDeviceTestContext(process=True), which forks the test interpreter
    and breaks event subscriptions once an earlier context has used Tango in it."""
    import tango

    from tango_servers.embedded_db import EmbeddedDatabase, free_port
    from tango_servers.launcher import start_servers, stop_servers
    from tango_servers.registration import register

    db = EmbeddedDatabase(tmp / "db", free_port()).start()
    servers = []
    try:
        host, port = db.tango_host.split(":")
        register(specs, tango.Database(host, int(port)))
        # 150 s to come up and connect: twice in six clean-clone runs on a loaded 2-core machine one
        # Integrator's subscription to its Stitcher timed out (TRANSIENT_CallTimedout) for over 60 s
        servers = start_servers(specs, db.tango_host, tmp / "logs", timeout_s=150)
        for server in servers:
            server.wait_connected(150)
        yield db.tango_host
    finally:
        stop_servers(servers)
        db.stop()


def readme_block(after: str, lang: str) -> str:
    """The first ```lang block of README.md after the text ``after``: README's examples are run as written."""
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index(after) :]
    return re.search(rf"```{lang}\n(.*?)```", section, re.S).group(1)
