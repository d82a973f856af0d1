"""README: every message carries its version and a receiver refuses one it does not know, naming it,
instead of misreading it. Checked on the JSON and on the bytes, as a newer sender would write them."""

import json

import numpy as np
import pytest

from pipeline_core.messages import MessageError, PatternBatch, ScanInfo


def _scan_json(**changes) -> str:
    fields = {"type": "scan", "version": 1, "scan": "ramp_00001", "detector": "lambda", "stem": "ramp_00001"}
    return json.dumps({**fields, **changes})


def test_scan_info_of_version_1_is_read():
    info = ScanInfo.from_json(_scan_json(total_frames=40))
    assert (info.scan, info.detector, info.total_frames, info.reintegration) == ("ramp_00001", "lambda", 40, False)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_scan_info_of_another_version_is_refused_naming_it(version):
    with pytest.raises(MessageError, match=rf"scan message version '?{version}'? is not supported \(we speak 1\)"):
        ScanInfo.from_json(_scan_json(version=version))


def test_scan_info_without_a_version_is_refused():
    text = json.dumps({"type": "scan", "scan": "s", "detector": "d", "stem": "s"})
    with pytest.raises(MessageError, match="scan message version None is not supported"):
        ScanInfo.from_json(text)


def _batch() -> PatternBatch:
    return PatternBatch(
        "s:0:0", "s", "lambda", "int0", 0, "abcd", np.array([1, 2]), np.array([0, 1]),
        np.arange(8, dtype=np.float32).reshape(2, 4), np.linspace(1.0, 4.0, 4),
    )


def test_pattern_batch_of_format_1_round_trips():
    fmt, payload = _batch().encode()
    assert fmt == "xrd-patterns/1" and payload[:4] == b"XRDP"
    back = PatternBatch.decode(fmt, payload)
    assert back.frame_numbers.tolist() == [1, 2]
    np.testing.assert_array_equal(back.intensities, np.arange(8, dtype=np.float32).reshape(2, 4))


@pytest.mark.parametrize("fmt", ["xrd-patterns/2", "xrd-patterns/0", "xrd-patterns", "other/1"])
def test_pattern_batch_of_another_format_is_refused_naming_it(fmt):
    _, payload = _batch().encode()
    expected = rf"pattern batch format '{fmt}' is not supported \(we speak xrd-patterns/1\)"
    with pytest.raises(MessageError, match=expected):
        PatternBatch.decode(fmt, payload)
