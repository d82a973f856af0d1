"""The rule of Trigger=lambda alone: Lambda server snapshots in, the parts that became written out."""

from pathlib import Path

import pytest

from pipeline_core.errors import ConfigError
from pipeline_core.live.triggers import check_trigger
from pipeline_core.live.triggers.lambda_follow import LambdaFollower, LambdaSnapshot, PartDue

RAW = "/data/raw"


def snap(state="MOVING", latest=0, frames=100, per_file=20, name="ramp_00007", **kw) -> LambdaSnapshot:
    return LambdaSnapshot(state, RAW, name, frames_per_file=per_file, frame_numbers=frames, latest_image_number=latest,
                          **kw)  # fmt: skip


def parts(due: list[PartDue]) -> list[tuple[int, int, bool]]:
    return [(d.part, d.frames, d.last) for d in due]


def test_parts_are_due_as_the_latest_image_passes_their_last_frame_and_the_last_when_state_is_on():
    f = LambdaFollower()
    assert f.update(snap("ON", 0)) == []
    assert f.update(snap("MOVING", 0)) == []
    assert f.update(snap(latest=19)) == []  # part 0 holds frames 1..20
    due = f.update(snap(latest=20))
    assert parts(due) == [(0, 20, False)]
    assert due[0] == PartDue(Path(RAW), "ramp_00007", 0, 20, True, False, 100)
    assert f.acquisition == "ramp_00007"
    assert parts(f.update(snap(latest=65))) == [(1, 20, False), (2, 20, False)]  # two passed between looks
    assert f.update(snap(latest=79)) == []
    assert parts(f.update(snap(latest=100))) == [(3, 20, False), (4, 20, False)]
    assert parts(f.update(snap("ON", 100))) == []  # every part announced already
    assert f.acquisition == ""
    assert f.update(snap("ON", 100)) == []  # idle: nothing more


def test_an_acquisition_stopped_early_ends_with_its_partial_last_part():
    f = LambdaFollower()
    f.update(snap("ON"))
    assert parts(f.update(snap(latest=25))) == [(0, 20, False)]
    assert parts(f.update(snap("ON", 33))) == [(1, 13, True)]


def test_a_single_file_acquisition_has_no_part_suffix():
    f = LambdaFollower()
    f.update(snap("MOVING", 0, frames=20, per_file=20))
    due = f.update(snap("ON", 20, frames=20, per_file=20))
    assert parts(due) == [(0, 20, True)] and due[0].parts_suffix is False
    f.update(snap("MOVING", 0, frames=21, per_file=20, name="ramp_00008"))
    due = f.update(snap("ON", 21, frames=21, per_file=20, name="ramp_00008"))
    assert parts(due) == [(0, 20, False), (1, 1, True)] and all(d.parts_suffix for d in due)


def test_a_follower_started_mid_acquisition_announces_the_parts_it_missed():
    """A Stitcher restarted while the detector acquires: everything written so far is due at once."""
    f = LambdaFollower()
    assert parts(f.update(snap(latest=47))) == [(0, 20, False), (1, 20, False)]
    assert parts(f.update(snap("ON", 100))) == [(2, 20, False), (3, 20, False), (4, 20, True)]


def test_an_acquisition_begun_and_ended_between_two_polls_is_taken_whole():
    f = LambdaFollower()
    assert f.update(snap("ON", 100, name="ramp_00007")) == []  # at start: a past acquisition, left alone
    assert f.update(snap("ON", 100, name="ramp_00007")) == []
    due = f.update(snap("ON", 40, name="ramp_00008"))  # the stem moved on and frames were counted
    assert parts(due) == [(0, 20, False), (1, 20, True)] and due[0].stem == "ramp_00008"


def test_a_new_acquisition_without_on_between_ends_the_previous_one():
    f = LambdaFollower()
    f.update(snap(latest=10, name="a"))
    due = f.update(snap(latest=0, name="b"))
    assert [(d.stem, d.part, d.last) for d in due] == [(s, p, p == 4) for s, p in [("a", i) for i in range(5)]]
    assert f.acquisition == "b"


def test_the_stem_comes_from_file_prefix_and_start_number_without_a_save_file_name():
    s = LambdaSnapshot("MOVING", RAW, "", "sample", 12, 20, 40, 20)
    assert s.stem == "sample_00012"
    due = LambdaFollower().update(s)
    assert parts(due) == [(0, 20, False)] and due[0].stem == "sample_00012"


def test_frames_per_file_zero_means_one_file_and_the_count_never_exceeds_the_acquisition():
    f = LambdaFollower()
    f.update(snap(latest=0, per_file=0, frames=30))
    assert parts(f.update(snap("ON", 35, per_file=0, frames=30))) == [(0, 30, True)]


def test_states_other_than_moving_and_running_are_idle():
    assert snap("RUNNING").acquiring and snap("moving").acquiring
    assert not any(snap(s).acquiring for s in ("ON", "FAULT", "STANDBY", "UNKNOWN"))


def test_a_trigger_name_is_checked_and_the_error_names_it():
    assert check_trigger(" Lambda ") == "lambda" and check_trigger("file-attribute") == "file-attribute"
    expected = r"Trigger 'inotify' is unknown; expected one of lambda, watch, file-attribute"
    with pytest.raises(ConfigError, match=expected):
        check_trigger("inotify")
