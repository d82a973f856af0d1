"""A simulated Lambda 2M acquisition of a dynamic compression ramp, in the detector's own layout.

What the files look like (``../shared/lambda-format.md``): three modules of 516 × 1554 pixels at
the real P02.2 offsets, each written to ``<stem>_m<k>_part<NNNNN>.nxs`` with the detector's NeXus
paths, one frame per chunk, bitshuffle-LZ4 or DEFLATE. What is in them, generated with pyFAI from a
known geometry: a gold pressure marker whose rings move to higher 2θ as the lattice shrinks along
the ramp (0 to 100 GPa on the Fei 2007 gold scale), a B1-structured sample phase that appears
mid-ramp, a smooth background, counting noise and a few hot pixels flagged in ``pixel_mask``. The
matching PONI and a user mask are written too.

Counting noise uses the Gaussian limit of Poisson statistics (variance = mean) drawn from a
pre-sampled bank: exact Poisson sampling costs ~150 ms per 2.4-Mpixel frame, which would make the
simulator slower than the detector it imitates.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from .errors import OutputError
from .formats import lambda_layout as L
from .formats.mask import save_mask_file
from .processing.stitch import StitchLayout
from .science.eos import EquationOfState, vinet_pressure

WAVELENGTH = 0.4836e-10  # m, P02.2
#: Geometry close to the beamline's L2.poni: the beam centre lies beside the detector, rings are arcs.
GEOMETRY = dict(dist=0.30, poni1=0.045, poni2=0.120, rot1=0.007, rot2=0.0015, rot3=0.0)
#: Gold follows the Fei et al. 2007 scale (PNAS 104, 9182; Vinet, V0 67.850 Å³, K0 167 GPa, K0' 6.00),
#: its pressure rising linearly from 0 to AU_P_END along the ramp (a constant compression rate), so a
#: pressure computed from simulated data can be checked against :func:`pressure_gpa`.
AU_FEI_2007 = EquationOfState("Fei et al. 2007 gold (Vinet)", "Fei et al., PNAS 104, 9182 (2007)", 67.850,
                              lambda v: vinet_pressure(v, 67.850, 167.0, 6.00))  # fmt: skip
AU_P_END = 100.0  # GPa, at the end of the ramp
AU_A0 = float(np.cbrt(AU_FEI_2007.v0))  # 4.0786 Å, gold at ambient pressure
AU_A_END = float(np.cbrt(AU_FEI_2007.volume_at(AU_P_END)))  # 3.7246 Å at 100 GPa (a = 3.90 Å is only 33 GPa)
AU_HKL = [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2), (4, 0, 0)]
SAMPLE_A = 5.40  # Å, B1 (rock-salt) sample phase
SAMPLE_HKL = [(1, 1, 1), (2, 0, 0), (2, 2, 0), (3, 1, 1), (2, 2, 2), (4, 0, 0)]
SATURATION = {"int16": 4095, "uint16": 4095, "uint32": 16_777_215}

PartCallback = Callable[[int, list[Path], int], None]


@dataclass
class SimulatedAcquisition:
    directory: Path
    stem: str
    module_files: list[list[Path]]  # [module][part]
    poni_path: Path
    mask_path: Path
    n_frames: int
    frames_per_file: int
    frame_shape: tuple[int, int]
    dead_pixels: list[tuple[int, int, int]] = field(default_factory=list)  # (module index, row, col)


def pressure_gpa(frame_index: int, n_frames: int) -> float:
    """Pressure (GPa) at a frame: rising linearly from 0 to :data:`AU_P_END` along the ramp."""
    return AU_P_END * frame_index / max(1, n_frames - 1)


@functools.lru_cache(maxsize=4096)
def lattice_a(frame_index: int, n_frames: int) -> float:
    """Gold lattice parameter (Å) at a frame: the Fei 2007 volume at :func:`pressure_gpa`."""
    return float(np.cbrt(AU_FEI_2007.volume_at(pressure_gpa(frame_index, n_frames))))


def two_theta_deg(a: float, hkl: tuple[int, int, int]) -> float:
    d = a / np.sqrt(sum(i * i for i in hkl))
    return float(np.degrees(2 * np.arcsin(WAVELENGTH * 1e10 / (2 * d))))


def au_peak_positions(frame_index: int, n_frames: int) -> list[float]:
    """Expected 2θ (deg) of the gold reflections at a frame of the ramp."""
    a = lattice_a(frame_index, n_frames)
    return [two_theta_deg(a, hkl) for hkl in AU_HKL]


def write_calibration(directory: str | Path, name: str = "lambda2m") -> tuple[Path, Path]:
    """Write the simulation's PONI and a user mask (a beamstop arm) for the stitched frame."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shape = _layout().frame_shape
    detector = Detector(pixel1=L.PIXEL_SIZE, pixel2=L.PIXEL_SIZE, max_shape=shape)
    ai = AzimuthalIntegrator(detector=detector, wavelength=WAVELENGTH, **GEOMETRY)
    poni = directory / f"{name}.poni"
    if poni.exists():
        poni.unlink()
    ai.write(str(poni))
    mask = np.zeros(shape, bool)
    mask[880:930, :420] = True  # beamstop holder shadow
    mask_path = directory / f"{name}_mask.edf"
    if mask_path.exists():
        mask_path.unlink()
    save_mask_file(mask_path, mask)
    return poni, mask_path


def _layout() -> StitchLayout:
    return StitchLayout.from_offsets(list(L.P02_2_OFFSETS), [L.MODULE_SHAPE] * 3)


class _Scene:
    """Per-pixel geometry of the three modules, computed once; a frame is then a few array operations."""

    def __init__(self, poni: Path, seed: int, dtype: str):
        import pyFAI

        layout = _layout()
        ai = pyFAI.load(str(poni))
        shape = layout.frame_shape
        tth = ai.center_array(shape, unit="2th_deg")
        gain = ai.solidAngleArray(shape) * ai.polarization(shape, 0.99)
        # modules in their own (un-flipped) coordinates: inverse of the Dioptas rule
        unflipped_tth, unflipped_gain = tth[::-1], gain[::-1]
        self.grid = np.linspace(float(tth.min()) - 0.5, float(tth.max()) + 0.5, 8000)
        step = self.grid[1] - self.grid[0]
        module_slices = [(slice(p.row, p.row + p.rows), slice(p.col, p.col + p.cols)) for p in layout.placements]
        # nearest grid point of each pixel (grid step ~0.002 deg, peaks 0.05 deg wide): one gather per frame
        self.index = [np.rint((unflipped_tth[s] - self.grid[0]) / step).astype(np.intp) for s in module_slices]
        gain = [unflipped_gain[s].astype(np.float32) for s in module_slices]
        scale = 1.0 / float(np.median(gain[0]))
        self.gain = [g * scale for g in gain]
        rng = np.random.default_rng(seed)
        npix = L.MODULE_SHAPE[0] * L.MODULE_SHAPE[1]
        self.noise = rng.standard_normal(2 * npix + 4096).astype(np.float32)
        self.rng = rng
        self.dtype = np.dtype(dtype)
        self.saturation = SATURATION[self.dtype.name]
        self.dead = [
            (k, int(r), int(c))
            for k in range(3)
            for r, c in zip(rng.integers(0, L.MODULE_SHAPE[0], 4), rng.integers(0, L.MODULE_SHAPE[1], 4), strict=True)
        ]

    def profile(self, index: int, n_frames: int) -> np.ndarray:
        """1-D intensity on ``self.grid`` at a frame: background + gold + (after mid-ramp) the sample."""
        x = self.grid
        y = 6.0 + 4.0 * np.exp(-(((x - 8.0) / 9.0) ** 2))
        for hkl, pos in zip(AU_HKL, au_peak_positions(index, n_frames), strict=True):
            y += 120.0 / sum(hkl) * np.exp(-0.5 * ((x - pos) / 0.05) ** 2)
        grown = (index - n_frames / 2) / max(1, n_frames / 2)
        if grown > 0:
            a = SAMPLE_A * (1 - 0.03 * grown)
            for hkl in SAMPLE_HKL:
                y += 60.0 * grown * np.exp(-0.5 * ((x - two_theta_deg(a, hkl)) / 0.07) ** 2)
        return y.astype(np.float32)

    def module_frames(self, index: int, n_frames: int) -> list[np.ndarray]:
        profile = self.profile(index, n_frames)
        out = []
        for k in range(3):
            mean = profile[self.index[k]] * self.gain[k]
            start = int(self.rng.integers(0, 4096))
            z = self.noise[start : start + mean.size].reshape(mean.shape)
            counts = np.rint(mean + np.sqrt(mean) * z)
            np.clip(counts, 0, self.saturation, out=counts)
            frame = counts.astype(self.dtype)
            for kk, r, c in self.dead:
                if kk == k:
                    frame[r, c] = self.saturation
            out.append(frame)
        return out


def _compression(name: str) -> dict:
    """h5py's filter arguments for ``bslz4`` or ``gzip``, each optionally ``+fletcher32``: HDF5's
    checksum filter, which some detector writers add (the only thing that catches a flipped bit
    inside a bitshuffle-LZ4 chunk)."""
    base, plus, check = name.partition("+")
    if plus and check != "fletcher32":
        raise OutputError(f"compression {name!r}: {check!r} is unknown; expected {base}+fletcher32")
    if base == "bslz4":
        filters = dict(hdf5plugin.Bitshuffle(cname="lz4"))
    elif base == "gzip":
        filters = {"compression": "gzip", "compression_opts": 2}
    else:
        raise OutputError(f"compression {name!r} is unknown; expected bslz4 or gzip (optionally +fletcher32)")
    return {**filters, "fletcher32": True} if plus else filters


#: How a module file appears under its name: written elsewhere and renamed into place (atomic, our
#: default), or written in place and closed (as a detector writing straight into its folder).
PUBLISH_MODES = ("rename", "in-place")


def _write_module_file(
    path: Path,
    frames: np.ndarray,
    module: int,
    first_number: int,
    total: int,
    pixel_mask: np.ndarray,
    compression: str,
    publish: str = "rename",
) -> None:
    """One module file exactly as the detector writes it, published under its name as ``publish`` says."""
    tmp = path.with_name(path.name + ".tmp") if publish == "rename" else path
    x, y = L.P02_2_OFFSETS[module]
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update(NX_class="NXroot", NeXus_version="4.3.0", file_name=path.name)
        entry = h5.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]), **_compression(compression))
        bytes_array = h5py.string_dtype("ascii")
        det.create_dataset("description", data=np.array([b"Lambda"], dtype=object), dtype=bytes_array)
        det.create_dataset("local_name", data=np.array([b"simulated-lambda2m"], dtype=object), dtype=bytes_array)
        det.create_dataset("layout", data=np.array([b"1554X516"], dtype=object), dtype=bytes_array)
        trans = det.create_group("translation")
        trans.attrs["NX_class"] = "NXtransformations"
        trans.create_dataset("distance", data=np.array([x, y, 0.0], np.float32))
        det.create_dataset("sequence_number", data=np.arange(first_number, first_number + len(frames), dtype=np.int32))
        det.create_dataset(
            "pixel_mask", data=pixel_mask[None].astype(np.uint32), chunks=(1, *pixel_mask.shape), compression="gzip"
        )
        det.create_dataset("x_pixel_size", data=np.array([55.0]))
        det.create_dataset("y_pixel_size", data=np.array([55.0]))
        coll = det.create_group("collection")
        coll.attrs["NX_class"] = "NXcollection"
        coll.create_dataset("frame_numbers", data=np.array([total], np.uint32))
        coll.create_dataset("module_id", data=np.array([module + 1], np.uint32))
    if tmp != path:
        os.replace(tmp, path)


def simulate_acquisition(
    outdir: str | Path,
    *,
    frames: int = 100,
    frames_per_file: int = 20,
    compression: str = "bslz4",
    stem: str = "ramp_00001",
    rate: float | None = None,
    seed: int = 0,
    dtype: str = "int16",
    on_part_written: PartCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    calibration: tuple[Path, Path] | None = None,
    on_frame: Callable[[int], None] | None = None,
    part_suffix: bool | None = True,
    modules_on: tuple[int, ...] = (1, 2, 3),
    publish: str = "rename",
    write_lag_s: float = 0.0,
) -> SimulatedAcquisition:
    """Write a whole acquisition; with ``rate`` (frames/s) parts appear in real time, as from a detector.

    ``on_frame(n)`` is called as each frame is acquired (``n`` frames so far: the Lambda server's
    ``LatestImageNumber``); ``on_part_written(part, files, n_frames)`` once the module files of a part
    are in place -- after its last frame, as a detector's writer closes the file. ``part_suffix``:
    names carry ``_part<NNNNN>`` (True), never (False), or as the Lambda server does (None: only when
    the acquisition has more frames than a file holds). ``modules_on``: a module switched off writes
    no file; ``write_lag_s``: a part's files appear this long after its last frame (a slow writer).
    ``compression``: ``bslz4`` or ``gzip``, either with ``+fletcher32`` (HDF5's checksum filter).
    Existing files of the same stem are never overwritten (OutputError).
    """
    if frames < 1 or frames_per_file < 1:
        raise OutputError(f"frames ({frames}) and frames per file ({frames_per_file}) must be at least 1")
    if not modules_on or not set(modules_on) <= {1, 2, 3}:
        raise OutputError(f"modules_on {modules_on} must name some of the modules 1, 2, 3")
    if publish not in PUBLISH_MODES:
        raise OutputError(f"publish {publish!r} is unknown; expected one of {', '.join(PUBLISH_MODES)}")
    suffixed = frames > frames_per_file if part_suffix is None else part_suffix
    if dtype not in SATURATION:
        raise OutputError(f"dtype {dtype!r} is not a Lambda data type; expected one of {', '.join(SATURATION)}")
    _compression(compression)
    outdir = Path(outdir).absolute()
    outdir.mkdir(parents=True, exist_ok=True)
    clash = sorted(outdir.glob(f"{stem}_m*"))
    if clash:
        raise OutputError(f"{outdir} already holds files of {stem} ({clash[0].name}, ...): choose another stem")
    poni, mask = calibration or write_calibration(outdir, stem)
    scene = _Scene(poni, seed, dtype)
    pixel_masks = [np.zeros(L.MODULE_SHAPE, np.uint32) for _ in range(3)]
    for k, r, c in scene.dead:
        pixel_masks[k][r, c] = 2  # "hot pixel" flag
    n_parts = -(-frames // frames_per_file)
    files: list[list[Path]] = [[], [], []]
    t0 = time.monotonic()
    for part in range(n_parts):
        if should_stop is not None and should_stop():
            break
        first = part * frames_per_file
        count = min(frames_per_file, frames - first)
        stacks = [np.empty((count, *L.MODULE_SHAPE), np.dtype(dtype)) for _ in range(3)]
        for i in range(count):
            for k, frame in enumerate(scene.module_frames(first + i, frames)):
                stacks[k][i] = frame
            if rate:
                delay = t0 + (first + i + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if on_frame is not None:
                on_frame(first + i + 1)
        if write_lag_s > 0:
            time.sleep(write_lag_s)
        paths = []
        for k in range(3):
            if k + 1 not in modules_on:
                continue
            path = outdir / (f"{stem}_m{k + 1}_part{part:05d}.nxs" if suffixed else f"{stem}_m{k + 1}.nxs")
            _write_module_file(path, stacks[k], k, first + 1, frames, pixel_masks[k], compression, publish)
            files[k].append(path)
            paths.append(path)
        if on_part_written is not None:
            on_part_written(part, paths, count)
    return SimulatedAcquisition(
        outdir, stem, files, poni, mask, frames, frames_per_file, _layout().frame_shape, scene.dead
    )
