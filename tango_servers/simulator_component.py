"""What the LambdaSimulator device does, without Tango: plan an acquisition, write it, report.

The device (:mod:`.simulator`) only turns properties into the constructor's arguments, commands into
method calls and the callbacks into change events, as the pipeline devices do with their stages. So
the acquisition logic (stems, the plan frozen at Start, counters, the background writer) is plain
Python that a test can drive with callbacks recorded.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline_core.errors import PipelineError
from pipeline_core.live.worker import ThreadContext

#: LatestImageNumber change events at most this often while acquiring (and always at a part's end)
LATEST_PUSH_S = 0.02


@dataclass
class AcquisitionPlan:
    """What the next Start writes (the operator's ``FrameNumbers``, ``FramesPerFile``, ``rate``...)."""

    frames: int = 200
    frames_per_file: int = 50
    rate: float = 100.0
    write_lag_s: float = 0.0
    save_file_path: str = ""
    save_file_name: str = ""
    file_prefix: str = "ramp"
    file_start_num: int = 1


@dataclass(frozen=True)
class SimulatorConfig:
    """The device's properties: where and how files are written."""

    output_directory: Path
    stem_prefix: str = "ramp"
    compression: str = "bslz4"
    modules_on: tuple[int, ...] = (1, 2, 3)


class Phase(enum.Enum):
    """Where the simulator is (the device shows ON, MOVING, FAULT)."""

    IDLE = "idle"
    ACQUIRING = "acquiring"
    FAILED = "failed"


class SimulatorRefusal(PipelineError):
    """Start cannot begin an acquisition now; ``reason`` is the Tango error reason to show."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SimulatorCallbacks:
    """How the component reports: each callback may be called from the writer's thread."""

    on_change: Callable[[], None]  # something shown changed (counters, phase, plan)
    on_file: Callable[[str], None]  # a module file is complete (its absolute path)
    on_frames_written: Callable[[int], None]  # frames of the current acquisition in files so far


class SimulatorComponent:
    """Writes Lambda acquisitions in the background as a Lambda server does, one at a time."""

    def __init__(
        self, config: SimulatorConfig, callbacks: SimulatorCallbacks, thread_context: ThreadContext | None = None
    ):
        self.config = config
        self.plan = AcquisitionPlan(
            save_file_path=str(config.output_directory.absolute()), file_prefix=config.stem_prefix
        )
        self._callbacks = callbacks
        self._thread_context = thread_context or contextlib.nullcontext
        self.phase = Phase.IDLE
        self.status = "Ready: Start writes an acquisition"
        self.scan = ""
        self.last_file = ""
        self.written = 0  # frames of the current acquisition in files
        self.latest = 0  # frames acquired (the Lambda server's LatestImageNumber)
        self.poni_path = self.mask_path = ""
        self._latest_pushed_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- commands ---------------------------------------------------------------------------------------
    def start(self) -> str:
        """Begin writing the plan's acquisition in the background; return its stem (phase ACQUIRING
        before this returns, so a client polling next sees it acquiring)."""
        if self._thread is not None and self._thread.is_alive():
            raise SimulatorRefusal("XRD_Busy", "an acquisition is being written; Stop it first")
        stem = self.next_stem()
        self._stop.clear()
        self.written = self.latest = 0
        self.scan = stem
        plan = replace(self.plan)  # a write during the acquisition applies to the next
        self.phase = Phase.ACQUIRING
        self.status = f"Acquiring {stem}: {plan.frames} frames at {plan.rate:g} Hz"
        self._thread = threading.Thread(target=self._acquire, args=(stem, plan), name="xrd-simulator", daemon=True)
        self._thread.start()
        return stem

    def stop(self) -> None:
        """Stop acquiring after the current part."""
        self._stop.set()

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop, and wait for the writer to finish its part (server shutdown or Init)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)

    def next_stem(self) -> str:
        """The next acquisition's stem, as the Lambda server names it; a stem with files is skipped
        (FilePrefix) or refused (SaveFileName): nothing is overwritten."""
        out, plan = Path(self.plan.save_file_path), self.plan
        if plan.save_file_name:
            if any(out.glob(f"{plan.save_file_name}_m*")):
                raise SimulatorRefusal(
                    "XRD_FileExists", f"{out} already holds files of {plan.save_file_name}: choose another SaveFileName"
                )
            return plan.save_file_name
        while any(out.glob(f"{plan.file_prefix}_{plan.file_start_num:05d}_m*")):
            plan.file_start_num += 1
        return f"{plan.file_prefix}_{plan.file_start_num:05d}"

    # -- the writer's thread ----------------------------------------------------------------------------
    def _acquire(self, stem: str, plan: AcquisitionPlan) -> None:
        with self._thread_context():
            self._callbacks.on_change()
            try:
                self._write(stem, plan)
            except (PipelineError, OSError) as exc:
                self.phase, self.status = Phase.FAILED, f"Writing {stem} failed: {exc}"
            self._callbacks.on_change()

    def _write(self, stem: str, plan: AcquisitionPlan) -> None:
        from pipeline_core.simulate import simulate_acquisition  # numpy/h5py: only when writing

        acq = simulate_acquisition(
            Path(plan.save_file_path),
            frames=plan.frames,
            frames_per_file=plan.frames_per_file,
            compression=self.config.compression,
            stem=stem,
            rate=plan.rate,
            on_part_written=self._part_written,
            should_stop=self._stop.is_set,
            on_frame=self._acquired,
            part_suffix=None,  # as the Lambda server: _partNNNNN only when the frames need parts
            modules_on=self.config.modules_on,
            write_lag_s=plan.write_lag_s,
        )
        self.poni_path, self.mask_path = str(acq.poni_path), str(acq.mask_path)
        if not plan.save_file_name:
            self.plan.file_start_num = max(self.plan.file_start_num, plan.file_start_num + 1)
        self.phase, self.status = Phase.IDLE, f"Wrote {stem}: {self.written} frames"

    def _acquired(self, n: int) -> None:
        """One more frame acquired: LatestImageNumber follows (reported at most every LATEST_PUSH_S)."""
        self.latest = n
        now = time.monotonic()
        if now - self._latest_pushed_at >= LATEST_PUSH_S or n % self.plan.frames_per_file == 0:
            self._latest_pushed_at = now
            self._callbacks.on_change()

    def _part_written(self, part: int, paths: list[Path], n_frames: int) -> None:
        for path in paths:
            self.last_file = str(Path(path).absolute())
            self._callbacks.on_file(self.last_file)
        self.written += n_frames
        self._callbacks.on_frames_written(self.written)
        self._callbacks.on_change()
