import numpy as np
import pytest

from pipeline_core.errors import SourceError
from pipeline_core.formats.lambda_layout import MODULE_SHAPE, P02_2_OFFSETS
from pipeline_core.processing.stitch import StitchLayout

from .helpers import dioptas_stitch


def test_lambda_2m_frame_shape_and_gap_fraction():
    layout = StitchLayout.from_offsets(list(P02_2_OFFSETS), [MODULE_SHAPE] * 3)
    assert layout.frame_shape == (1833, 1556)
    gaps = layout.gap_mask()
    assert gaps.sum() == 1833 * 1556 - 3 * 516 * 1554
    assert 0.15 < gaps.mean() < 0.17


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint32])
def test_stitch_is_pixel_exact_against_dioptas_rule(dtype):
    rng = np.random.default_rng(1)
    modules = [rng.integers(0, 4000, MODULE_SHAPE).astype(dtype) for _ in range(3)]
    layout = StitchLayout.from_offsets(list(P02_2_OFFSETS), [MODULE_SHAPE] * 3)
    ours = layout.stitch(modules)
    ref = dioptas_stitch(modules, P02_2_OFFSETS)
    assert ours.dtype == dtype
    np.testing.assert_array_equal(ours, ref)
    # the gap mask is exactly where Dioptas leaves zeros when every module pixel is non-zero
    ones = dioptas_stitch([np.ones(MODULE_SHAPE, np.uint8)] * 3, P02_2_OFFSETS)
    np.testing.assert_array_equal(layout.gap_mask(), ones == 0)


def test_stitch_stack_equals_frame_by_frame():
    rng = np.random.default_rng(2)
    shape = (5, 7)
    offsets = [(0, 0), (-1, 6), (-1, 13)]
    layout = StitchLayout.from_offsets(offsets, [shape] * 3)
    stacks = [rng.integers(0, 9, (4, *shape)) for _ in range(3)]
    stacked = layout.stitch(stacks)
    for i in range(4):
        np.testing.assert_array_equal(stacked[i], dioptas_stitch([s[i] for s in stacks], offsets))


def test_row_flip_puts_module_1_at_the_bottom():
    layout = StitchLayout.from_offsets([(0, 0), (0, 3)], [(2, 2), (2, 2)])
    frame = layout.stitch([np.full((2, 2), 1), np.full((2, 2), 2)])
    assert frame.shape == (5, 2)
    assert frame[-1, 0] == 1 and frame[0, 0] == 2 and frame[2, 0] == 0


def test_module_mask_and_pixel_flags_are_stitched():
    layout = StitchLayout.from_offsets([(0, 0), (0, 3)], [(2, 2), (2, 2)])
    bad = np.zeros((2, 2), bool)
    bad[0, 1] = True  # module 1, first row -> last row of the flipped frame
    mask = layout.stitch_mask([bad, None])
    assert mask[4, 1] and not mask[4, 0]
    assert mask[2].all()  # the gap row


def test_wrong_module_shape_is_a_clear_error():
    layout = StitchLayout.from_offsets([(0, 0), (0, 3)], [(2, 2), (2, 2)])
    with pytest.raises(SourceError, match="module 2 frame has shape"):
        layout.stitch([np.zeros((2, 2)), np.zeros((3, 2))])


def test_overlapping_modules_are_refused():
    with pytest.raises(SourceError, match="overlap"):
        StitchLayout.from_offsets([(0, 0), (0, 1)], [(2, 2), (2, 2)])
