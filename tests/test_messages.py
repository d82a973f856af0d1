"""Every message type, fed anything: it parses into a valid value or raises MessageError, nothing else.

The commands that take these messages are reachable by anyone on the control network, so decoding
is the first line of defence. Property-based (hypothesis): arbitrary text, arbitrary JSON, and valid
messages with one field replaced by an arbitrary JSON value.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_core.messages import (
    MAX_FRAME_NUMBER,
    ClaimRequest,
    MessageError,
    PatternBatch,
    ReintegrateRequest,
    RequeueRequest,
    ScanInfo,
    WorkItem,
)

SAMPLES = {
    ScanInfo: ScanInfo("scan_00001", "lambda", "scan_00001", 30, False),
    WorkItem: WorkItem("s:0:0", "s", "lambda", 0, ["/raw/a_m1.nxs", "/raw/a_m2.nxs"], 0, 2, [1, 2], 10),
    ClaimRequest: ClaimRequest("p02/xrd/integrator1", {"poni_path": "/c/a.poni", "bins": 10, "unit": "2th_deg"}, ["x"]),
    RequeueRequest: RequeueRequest("scan_00001", [3, 4, 7], "/raw/scan_00001_m1_part00000.nxs"),
    ReintegrateRequest: ReintegrateRequest("/raw/scan_00001_m1.nxs"),
}
TYPES = list(SAMPLES)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _valid(message) -> None:
    """A decoded message really has the declared field types and bounds."""
    for name, value in vars(message).items():
        if name in ("frame_numbers", "frames"):
            assert all(type(v) is int and 0 <= v <= MAX_FRAME_NUMBER for v in value)
        if name == "module_files":
            assert value and all(type(v) is str for v in value)
        if name in ("scan", "item_id", "integrator", "path", "raw_file", "detector", "stem"):
            assert type(value) is str
        if name == "announced_at":
            assert math.isfinite(value)
    if isinstance(message, ClaimRequest):
        assert all(type(v) is str for v in message.done)
        assert type(message.settings.get("bins", 1)) is int
        assert type(message.settings.get("poni_path", "")) is str


def _decode(message_type, text):
    try:
        message = message_type.from_json(text)
    except MessageError:
        return None
    _valid(message)
    return message


@pytest.mark.parametrize("message_type", TYPES, ids=lambda t: t.__name__)
def test_samples_round_trip(message_type):
    assert message_type.from_json(SAMPLES[message_type].to_json()) == SAMPLES[message_type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_type=st.sampled_from(TYPES), text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text_parses_or_raises_message_error(message_type, text):
    _decode(message_type, text)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_type=st.sampled_from(TYPES), data=st.data(), value=json_values)
def test_one_field_replaced_by_anything_parses_or_raises_message_error(message_type, data, value):
    fields = json.loads(SAMPLES[message_type].to_json())
    key = data.draw(st.sampled_from(sorted(fields) + ["extra"]))
    fields[key] = value
    if data.draw(st.booleans()):
        del fields[data.draw(st.sampled_from(sorted(fields)))]
    _decode(message_type, json.dumps(fields))


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_reintegrate_from_text_parses_or_raises_message_error(text):
    try:
        request = ReintegrateRequest.from_text(text)
    except MessageError:
        return
    assert request.path == text and "\0" not in text


def _batch(n=2, bins=3, sigma=True) -> PatternBatch:
    return PatternBatch(
        "s:0:0",
        "s",
        "lambda",
        "int0",
        0,
        "abcd",
        np.arange(1, n + 1),
        np.arange(n),
        np.ones((n, bins), np.float32),
        np.arange(bins, dtype=float),
        np.ones((n, bins), np.float32) if sigma else None,
        raw_file="/raw/a_m1.nxs",
        module_files=["/raw/a_m1.nxs"],
        total_frames=4,
    )


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_pattern_batch_decode_of_damaged_payloads_raises_message_error_only(data):
    fmt, payload = _batch().encode()
    kind = data.draw(st.sampled_from(["bytes", "flip", "cut", "header"]))
    if kind == "bytes":
        payload = data.draw(st.binary(max_size=300))
    elif kind == "flip":
        i = data.draw(st.integers(0, len(payload) - 1))
        payload = payload[:i] + bytes([payload[i] ^ data.draw(st.integers(1, 255))]) + payload[i + 1 :]
    elif kind == "cut":
        payload = payload[: data.draw(st.integers(0, len(payload)))]
    else:  # a header field replaced by anything, lengths kept consistent
        head_len = int.from_bytes(payload[4:8], "little")
        header = json.loads(payload[8 : 8 + head_len])
        header[data.draw(st.sampled_from(sorted(header)))] = data.draw(json_values)
        head = json.dumps(header).encode()
        payload = payload[:4] + len(head).to_bytes(4, "little") + head + payload[8 + head_len :]
    try:
        batch = PatternBatch.decode(fmt, payload)
    except MessageError:
        return
    assert batch.intensities.shape == (len(batch.frame_numbers), len(batch.radial))


def test_the_refusals_name_the_field_and_what_was_expected():
    with pytest.raises(MessageError, match=r"requeue.frames\[0\]: expected an integer in 1..2147483647, got inf"):
        RequeueRequest.from_json('{"type":"requeue","version":1,"scan":"s","frames":[1e400]}')
    with pytest.raises(MessageError, match=r"claim.settings: expected an object .* got \['x'\]"):
        ClaimRequest.from_json('{"type":"claim","version":1,"settings":["x"]}')
    with pytest.raises(MessageError, match=r"claim message: not JSON"):
        ClaimRequest.from_json("{not json")
    with pytest.raises(MessageError, match=r"claim message: not JSON"):
        ClaimRequest.from_json("[" * 100_000)  # nested too deep: RecursionError inside json
    with pytest.raises(MessageError, match=r"version True is not supported"):
        ClaimRequest.from_json('{"type":"claim","version":true}')
    with pytest.raises(MessageError, match=r"work.frame_numbers: expected 2 numbers"):
        WorkItem.from_json(SAMPLES[WorkItem].to_json().replace("[1,2]", "[1]"))
    with pytest.raises(MessageError, match=r"reintegrate.path: expected a path without NUL"):
        ReintegrateRequest.from_text("/raw/a\0b")
    fmt, payload = _batch().encode()
    with pytest.raises(MessageError, match=r"pattern batch sigma: expected true or false, got 1234"):
        PatternBatch.decode(fmt, payload.replace(b'"sigma":true', b'"sigma":1234'))  # same header length


def test_pattern_batch_round_trip_keeps_values():
    b = _batch()
    d = PatternBatch.decode(*b.encode())
    assert d.frame_numbers.tolist() == [1, 2] and d.intensities.shape == (2, 3) and d.sigma is not None
    assert d.raw_file == "/raw/a_m1.nxs" and d.total_frames == 4
