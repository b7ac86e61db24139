"""MATLAB-compatible bicubic imresize: known values, shapes, numpy/torch agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.resize import cubic, imresize, imresize_torch, weight_matrix
from tests.builders import real_frames


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return real_frames("bikes.mp4", 40, 1)[0]  # 272x640x3 uint8 real frame


def test_cubic_kernel_values():
    # MATLAB's kernel with a = -0.5, evaluated by hand.
    x = np.array([0.0, 0.25, 0.75, 1.0, 1.25, 1.75, 2.0, 2.5])
    np.testing.assert_allclose(cubic(x), [1.0, 0.8671875, 0.2265625, 0.0, -0.0703125, -0.0234375, 0.0, 0.0])
    np.testing.assert_allclose(cubic(-x), cubic(x))


def test_downscale_by_two_weights_are_matlab_antialiased_kernel():
    # s = 1/2: kernel stretched to width 8 and scaled by 1/2; output 3 (0-based) sits at input 6.5.
    row = weight_matrix(16, 8, 0.5)[3]
    expected = 0.5 * cubic(np.array([3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5]) / 2)
    np.testing.assert_allclose(row[3:11], expected, atol=1e-12)
    np.testing.assert_allclose(
        expected,
        [-0.01171875, -0.03515625, 0.11328125, 0.43359375] * 1
        + [0.43359375, 0.11328125, -0.03515625, -0.01171875],
    )
    assert row[:3].sum() == 0 and row[11:].sum() == 0


def test_border_taps_mirror_with_edge_repeated():
    # Output 0 of a x1/2 resize needs inputs -3..4 (0-based); MATLAB mirrors -1 -> 0, -2 -> 1, -3 -> 2.
    row = weight_matrix(16, 8, 0.5)[0]
    k = 0.5 * cubic((0.5 - np.arange(-3, 5)) / 2)
    np.testing.assert_allclose(row[:5], [k[3] + k[2], k[4] + k[1], k[5] + k[0], k[6], k[7]], atol=1e-12)
    np.testing.assert_allclose(weight_matrix(16, 8, 0.5).sum(axis=1), 1.0)


@pytest.mark.parametrize("scale", [0.25, 0.5, 1 / 3, 2.0, 4.0])
def test_constant_image_stays_constant(scale):
    img = np.full((24, 36, 3), 0.37)
    out = imresize(img, scale)
    np.testing.assert_allclose(out, 0.37, atol=1e-12)
    assert imresize(np.full((24, 36), 200, np.uint8), scale).tolist() == np.full(out.shape[:2], 200).tolist()


@pytest.mark.parametrize("factor", [2, 4])
def test_linear_ramp_downscale_gives_block_centres(factor):
    # Interior outputs of a ramp f(x) = x equal the ramp at the block centre (factor*j + (factor-1)/2).
    width = 64
    ramp = np.tile(np.arange(width, dtype=np.float64), (8, 1))
    out = imresize(ramp, 1 / factor)
    j = np.arange(out.shape[1])
    want = factor * j + (factor - 1) / 2
    interior = slice(3, -3)
    np.testing.assert_allclose(out[1, interior], want[interior], atol=1e-9)
    assert abs(out[1, 0] - want[0]) > 1e-3  # the mirrored border is not linear


def test_output_shapes():
    assert imresize(np.zeros((272, 640, 3), np.uint8), 0.25).shape == (68, 160, 3)
    assert imresize(np.zeros((7, 9)), 0.5).shape == (4, 5)  # ceil, as MATLAB
    assert imresize(np.zeros((10, 10, 1)), 3).shape == (30, 30, 1)
    assert imresize(np.zeros((10, 20, 3)), output_shape=(5, 7)).shape == (5, 7, 3)
    assert imresize(np.zeros((10, 20)), scale=(0.5, 0.25)).shape == (5, 5)
    assert imresize_torch(torch.zeros(2, 3, 16, 24), 0.25).shape == (2, 3, 4, 6)


def test_dtypes_and_rounding(photo):
    out = imresize(photo, 0.25)
    assert out.dtype == np.uint8
    exact = imresize(photo.astype(np.float64), 0.25)
    np.testing.assert_array_equal(out, np.clip(np.round(exact), 0, 255))
    assert imresize(photo.astype(np.float32) / 255, 0.25).dtype == np.float32


@pytest.mark.parametrize("scale", [0.25, 0.5, 2.0, (0.5, 0.25)])
def test_numpy_and_torch_agree_on_a_real_photo(photo, scale):
    img = photo.astype(np.float32) / 255
    want = imresize(img, scale)
    got = imresize_torch(torch.from_numpy(img).permute(2, 0, 1), scale).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_antialiasing_off_uses_the_narrow_kernel(photo):
    img = photo[:64, :64].astype(np.float64)
    narrow = imresize(img, 0.25, antialiasing=False)
    assert np.count_nonzero(weight_matrix(64, 16, 0.25, False)[5]) == 4
    assert not np.allclose(narrow, imresize(img, 0.25))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="scale must be > 0"):
        imresize(np.zeros((4, 4)), 0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        imresize(np.zeros((1, 4, 4, 3)), 0.5)
    with pytest.raises(ValueError, match="float tensor"):
        imresize_torch(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
