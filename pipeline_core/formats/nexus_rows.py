"""The rows of a merged file: patterns kept ordered by frame number, each frame written once.

Batches arrive in any order (several Integrators); rows are inserted at their place, and the
bookkeeping of which raw file each row came from (``pos_map``, ``file_map``, ``files``,
``input_files``) follows. The numbers are mirrored in memory so a duplicate is refused without
reading the file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import OutputError
from .hdf5_io import METADATA_PER_WRITE
from .nexus_layout import ResultDatasets

log = logging.getLogger(__name__)


class RowStore:
    """Inserts pattern rows into the datasets of one open file (the caller flushes)."""

    def __init__(self, path: Path, datasets: ResultDatasets, error_model: str | None, n_raw_files: int):
        self.path = path  # for messages only
        self.ds = datasets
        self.bins = int(datasets.data.shape[1])
        self.error_model = error_model
        self.n_raw_files = n_raw_files
        self.duplicates_ignored = 0
        self.numbers = np.zeros(0, dtype=np.int64)
        self._file_index = np.zeros(0, dtype=np.int64)

    def bytes_for(self, n: int) -> int:
        """Most bytes ``n`` new rows can add to the file, for the free-space check before a write.

        HDF5 allocates whole chunks (measured on tmpfs: a chunk's full size at its first row, nothing
        for the rows after it): ``n`` more rows take the chunks of ``c`` rows that the row count
        newly reaches, in every row dataset; rows inserted out of order rewrite chunks that exist
        already, in place."""
        old = int(self.numbers.size)
        total = METADATA_PER_WRITE
        for ds in self.ds.rows().values():
            rows_per_chunk = int(ds.chunks[0])
            chunk = ds.dtype.itemsize * int(np.prod(ds.chunks, dtype=np.int64))
            new_chunks = -(-(old + n) // rows_per_chunk) - -(-old // rows_per_chunk)
            total += new_chunks * chunk
        return total

    def add(
        self,
        frame_numbers: np.ndarray,
        intensities: np.ndarray,
        sigma: np.ndarray | None = None,
        file_index: np.ndarray | None = None,
        index_in_file: np.ndarray | None = None,
    ) -> int:
        """Insert patterns at their place by frame number; returns how many were new."""
        numbers = np.asarray(frame_numbers, dtype=np.int64).ravel()
        n = numbers.size
        intensities = np.asarray(intensities, dtype=np.float32).reshape(n, self.bins)
        fidx = np.full(n, -1, np.int64) if file_index is None else np.asarray(file_index, np.int64).reshape(n)
        iidx = np.full(n, -1, np.int64) if index_in_file is None else np.asarray(index_in_file, np.int64).reshape(n)
        if self.error_model is not None:
            if sigma is None:
                raise OutputError(f"{self.path}: the error model is {self.error_model} but no sigma came")
            sigma = np.asarray(sigma, dtype=np.float32).reshape(n, self.bins)

        _, first = np.unique(numbers, return_index=True)
        keep = np.zeros(n, bool)
        keep[first] = True
        keep &= ~np.isin(numbers, self.numbers)
        dropped = n - int(keep.sum())
        if dropped:
            self.duplicates_ignored += dropped
            log.warning("%s: ignored %d duplicate frame(s): %s", self.path.name, dropped, numbers[~keep].tolist()[:20])
        if not keep.any():
            return 0
        order = np.argsort(numbers[keep], kind="stable")
        new: dict[str, np.ndarray] = {
            "numbers": numbers[keep][order],
            "data": intensities[keep][order],
            "pos": np.stack([fidx[keep][order], iidx[keep][order]], axis=1),
        }
        if sigma is not None and self.error_model is not None:
            new["errors"] = sigma[keep][order]
        self._insert(new)
        return int(order.size)

    def _insert(self, new: dict[str, np.ndarray]) -> None:
        old_n = self.numbers.size
        k = new["numbers"].size
        start = int(np.searchsorted(self.numbers, new["numbers"][0]))
        datasets = self.ds.rows()
        if start == old_n:  # the common case: frames arrive in order
            merged = new
        else:  # out of order: rewrite the tail from the insertion point
            tail_numbers = self.numbers[start:]
            order = np.argsort(np.concatenate([tail_numbers, new["numbers"]]), kind="stable")
            merged = {}
            for key, ds in datasets.items():
                old = tail_numbers if key == "numbers" else ds[start:old_n]
                merged[key] = np.concatenate([old, new[key]])[order]
        for ds in datasets.values():
            ds.resize(old_n + k, axis=0)
        for key, ds in sorted(datasets.items(), key=lambda kv: kv[0] == "numbers"):  # frame numbers last
            ds[start : old_n + k] = merged[key]
        self.numbers = np.concatenate([self.numbers[:start], merged["numbers"]])
        self._file_index = np.concatenate([self._file_index[:start], merged["pos"][:, 0]])
        self._write_file_map()

    def raw_file(self, index: int) -> str:
        """The raw (module-1) file recorded for part ``index``; "" when none is yet."""
        files = self.ds.proc["files"]
        return str(files.asstr()[index]) if 0 <= index < files.shape[0] else ""

    def set_raw_file(self, index: int, path: str, module_files: Sequence[str] = ()) -> None:
        """Name the raw (module-1) file of part ``index``; live scans learn their parts one by one.

        ``module_files`` (all files of the part) are added to ``input_files`` for provenance. A part
        already named after another file is refused (OutputError): its rows point at that file
        (``pos_map``), and renaming it would make them point at frames they were not made from.
        """
        proc = self.ds.proc
        files = proc["files"]
        recorded = self.raw_file(index)
        if recorded == path:
            return  # known already: every batch of a part names it again
        if recorded:
            raise OutputError(f"{self.path}: part {index} is {recorded}, not {path}: a part's file is never renamed")
        inputs = proc["input_files"]
        known = set(inputs.asstr()[()]) if inputs.shape[0] else set()
        new = [f for f in module_files if f not in known]
        if new:
            inputs.resize((inputs.shape[0] + len(new),))
            inputs[-len(new) :] = new
        if index >= files.shape[0]:
            files.resize((index + 1,))
            proc["file_map"].resize((index + 2,))
            self.n_raw_files = index + 1
        files[index] = path
        self._write_file_map()

    def _write_file_map(self) -> None:
        valid = self._file_index[self._file_index >= 0]
        counts = np.bincount(valid, minlength=self.n_raw_files)[: self.n_raw_files]
        self.ds.proc["file_map"][...] = np.concatenate([[0], np.cumsum(counts)])
