"""Temporal padding, paired crops and augmentation."""

from __future__ import annotations

import random

import numpy as np
import pytest

from data.transforms import frames_to_tensor, paired_random_crop, random_flip_rotate, temporal_indices

# Hand-computed windows: clip of 10 frames (0..9), 5-frame window.
CASES = {
    "replicate": {0: [0, 0, 0, 1, 2], 1: [0, 0, 1, 2, 3], 8: [6, 7, 8, 9, 9], 9: [7, 8, 9, 9, 9]},
    "reflection": {0: [2, 1, 0, 1, 2], 1: [1, 0, 1, 2, 3], 8: [6, 7, 8, 9, 8], 9: [7, 8, 9, 8, 7]},
    "reflection_circle": {0: [4, 3, 0, 1, 2], 1: [4, 0, 1, 2, 3], 8: [6, 7, 8, 9, 5], 9: [7, 8, 9, 6, 5]},
    "circle": {0: [3, 4, 0, 1, 2], 1: [4, 0, 1, 2, 3], 8: [6, 7, 8, 9, 5], 9: [7, 8, 9, 5, 6]},
}


@pytest.mark.parametrize("mode", CASES)
def test_padding_modes_match_hand_computed_windows(mode):
    for center, want in CASES[mode].items():
        assert temporal_indices(center, 10, 5, mode) == want, (mode, center)
    assert temporal_indices(5, 10, 5, mode) == [3, 4, 5, 6, 7]


def test_seven_frame_reflection_circle_at_start():
    assert temporal_indices(0, 100, 7, "reflection_circle") == [6, 5, 4, 0, 1, 2, 3]
    assert temporal_indices(99, 100, 7, "reflection") == [96, 97, 98, 99, 98, 97, 96]


def test_padding_errors():
    with pytest.raises(ValueError, match="padding must be one of"):
        temporal_indices(0, 10, 5, "zeros")
    with pytest.raises(ValueError, match="odd"):
        temporal_indices(0, 10, 4)
    with pytest.raises(ValueError, match="too short"):
        temporal_indices(0, 3, 5, "reflection_circle")
    assert temporal_indices(0, 3, 5, "reflection") == [2, 1, 0, 1, 2]


def test_paired_crop_is_aligned_and_sized():
    gt = np.arange(64 * 96 * 3, dtype=np.int64).reshape(64, 96, 3)
    lq = gt[::4, ::4]  # pixel (i, j) of LR = pixel (4i, 4j) of GT
    random.seed(3)
    for _ in range(20):
        (lq_crop,), gt_crop = paired_random_crop([lq], gt, 32, 4, "clip/0")
        assert lq_crop.shape == (8, 8, 3) and gt_crop.shape == (32, 32, 3)
        np.testing.assert_array_equal(gt_crop[::4, ::4], lq_crop)


def test_paired_crop_errors_name_the_sample():
    gt, lq = np.zeros((64, 96, 3)), np.zeros((16, 25, 3))
    with pytest.raises(ValueError, match=r"clip 7/00000003: GT frame is 96x64 but LR frame 25x16"):
        paired_random_crop([lq], gt, 32, 4, "clip 7/00000003")
    with pytest.raises(ValueError, match="smaller than the LR crop"):
        paired_random_crop([np.zeros((4, 4, 3))], np.zeros((16, 16, 3)), 32, 4, "c/f")
    with pytest.raises(ValueError, match="divisible"):
        paired_random_crop([lq], gt, 30, 4, "c/f")


def test_flip_rotate_is_identical_across_frames_and_covers_all_eight():
    base = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    seen = set()
    random.seed(0)
    for _ in range(200):
        a, b, c = random_flip_rotate([base, base.copy(), base.copy()])
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        seen.add(a.tobytes() + bytes(a.shape))
    assert len(seen) == 8
    assert all(np.array_equal(f, base) for f in random_flip_rotate([base, base], hflip=False, rotation=False))


def test_frames_to_tensor_range_and_layout():
    frames = [np.full((4, 5, 3), 255, np.uint8), np.zeros((4, 5, 3), np.uint8)]
    t = frames_to_tensor(frames)
    assert t.shape == (2, 3, 4, 5) and str(t.dtype) == "torch.float32"
    assert float(t[0].min()) == 1.0 and float(t[1].max()) == 0.0
