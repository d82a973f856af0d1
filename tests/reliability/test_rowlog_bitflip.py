"""A bit flipped in a record in the middle of a row log (not a torn tail): a resume never replays it.

The row log is how a Merger killed or stopped mid-scan rebuilds its file. Each record carries the
CRC-32 of its payload; a record whose checksum does not match ends what is replayed, so the rows it
and every later record held are not in the rebuilt file: they count as missing, the gap check asks
for them again, and a scan whose frames never come again closes with them listed as failed. The
file is never published ``complete`` with a wrong row or without a frame.
"""

from __future__ import annotations

import functools
import struct

import pytest

from pipeline_core.formats.nexus import read_merged
from pipeline_core.live import merge_log
from pipeline_core.live.merge_journal import journal_path
from pipeline_core.live.merge_stage import MergeStage
from pipeline_core.processing.integrate import IntegrationSettings

from ..helpers import pattern_batch, wait_for

HEADER = struct.Struct("<4sII")  # magic, payload length, CRC-32 (pipeline_core/live/merge_log.py)


_batch = functools.partial(pattern_batch, total=8, bins=4)

def _records(raw: bytes) -> list[tuple[int, int]]:
    """(offset of the payload, its length) of every record, read as the format says."""
    spans, at = [], 0
    while at < len(raw):
        _magic, length, _crc = HEADER.unpack_from(raw, at)
        spans.append((at + HEADER.size, length))
        at += HEADER.size + length
    return spans


def _merge_then_suspend(out, settings):
    """Frames 1-6 of 8 merged in three batches, then a shutdown leaves the file open with its row log."""
    stage = MergeStage(out, lambda s: None, lambda e: None)
    for numbers in ([1, 2], [3, 4], [5, 6]):
        stage.add_batch(_batch(settings, numbers))
    wait_for(lambda: stage.counters.frames_processed == 6, 30, "frames 1-6 merged")
    stage.stop()
    return out / "scan.nxs"


def _flip_a_bit_in_the_middle(path) -> None:
    """One bit of the intensities of the record of frames 3-4 (the 2nd of three rows records)."""
    rowlog = merge_log.log_path(path)
    raw = bytearray(rowlog.read_bytes())
    spans = _records(bytes(raw))
    kinds = [merge_log.Record.decode(bytes(raw[o : o + n])).kind for o, n in spans]
    rows = [span for span, kind in zip(spans, kinds, strict=True) if kind == "rows"]
    assert len(rows) == 3, kinds
    offset, length = rows[1]
    raw[offset + length - 3] ^= 0x10  # inside the last row's intensities: decodes fine, wrong value
    rowlog.write_bytes(bytes(raw))


@pytest.mark.parametrize("sent_again", [True, False], ids=["frames-sent-again", "frames-never-come"])
def test_a_bit_flipped_mid_log_is_never_replayed_into_the_file(tmp_path, small_poni, ledger, sent_again):
    settings = IntegrationSettings(small_poni, bins=4)
    path = _merge_then_suspend(tmp_path, settings)
    _flip_a_bit_in_the_middle(path)
    ledger.fault("a bit flipped in a record in the middle of a row log")

    closed, errors, asked = [], [], []
    stage = MergeStage(tmp_path, closed.append, errors.append, gap_check_s=1.0,
                       scan_timeout_s=3.0 if not sent_again else 120.0,
                       request_missing=lambda scan, frames, raw: asked.append(list(frames)))  # fmt: skip
    try:
        wait_for(lambda: asked, 60, "the frames the damaged log lost to be asked again")
        # the record of 3-4 and the one after it (5-6) are not replayed: 3..8 are missing
        assert asked[0] == [3, 4, 5, 6, 7, 8]
        assert any("row log" in e and "checksum" in e and "scan.nxs" in e for e in errors), errors
        if sent_again:
            for numbers in ([3, 4], [5, 6], [7, 8]):
                stage.add_batch(_batch(settings, numbers))
        wait_for(lambda: closed, 120, "the scan to close")
    finally:
        stage.stop()
    m = read_merged(closed[0].path)
    assert (m["data"] == m["frame_number"][:, None]).all(), "a row holds a value the flip made"
    if sent_again:
        assert closed[0].path == path and closed[0].complete and m["status"] == "complete"
        assert m["frame_number"].tolist() == list(range(1, 9))
    else:
        assert not closed[0].complete and m["status"] != "complete"
        assert m["frame_number"].tolist() == [1, 2]
        assert m["failed_frames"] == ["3-8"]
    assert not journal_path(path).exists()
    ledger.checked(len(m["frame_number"]))
