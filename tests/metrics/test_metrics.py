"""PSNR/SSIM against hand-computed values; numpy and torch versions agree."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics import psnr, psnr_torch, rgb_to_y, ssim, ssim_torch
from metrics.ssim import C1


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float64) / 255.0).permute(2, 0, 1)[None]


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 8, a.shape), 0, 255).round().astype(np.uint8)
    return a, b


def test_identical_images():
    img = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert psnr(img, img) == math.inf
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-12)
    assert torch.isinf(psnr_torch(to_tensor(img), to_tensor(img))).all()


def test_known_mse_gives_known_psnr():
    a = np.full((8, 8, 3), 100, dtype=np.uint8)
    b = a + 10  # MSE = 100
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    assert psnr_torch(to_tensor(a), to_tensor(b)).item() == pytest.approx(28.130803608679106, abs=1e-9)


def test_y_channel_range_and_weights():
    assert rgb_to_y(np.array([[[0, 0, 0]]])).item() == pytest.approx(16.0)
    assert rgb_to_y(np.array([[[255, 255, 255]]])).item() == pytest.approx(235.0)
    assert rgb_to_y(np.array([[[255, 0, 0]]])).item() == pytest.approx(16 + 65.481)
    assert rgb_to_y(np.array([[[0, 0, 255]]])).item() == pytest.approx(16 + 24.966)


def test_crop_border_ignores_the_border():
    a = np.full((20, 20, 3), 50, dtype=np.uint8)
    b = a.copy()
    b[:3] = 0
    assert psnr(a, b) < 30
    assert psnr(a, b, crop_border=3) == math.inf


def test_ssim_of_a_brightness_shift_on_a_flat_image():
    c, d = 100.0, 20.0
    a = np.full((16, 16, 1), c)
    expected = (2 * c * (c + d) + C1) / (c**2 + (c + d) ** 2 + C1)  # structure and contrast terms are 1
    assert ssim(a, a + d) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("test_y_channel", [False, True])
def test_numpy_and_torch_agree(pair, crop_border, test_y_channel):
    a, b = pair
    ta, tb = to_tensor(a), to_tensor(b)
    kwargs = dict(crop_border=crop_border, test_y_channel=test_y_channel)
    assert psnr_torch(ta, tb, **kwargs).item() == pytest.approx(psnr(a, b, **kwargs), abs=1e-9)
    assert ssim_torch(ta, tb, **kwargs).item() == pytest.approx(ssim(a, b, **kwargs), abs=1e-9)


def test_torch_metrics_are_per_image(pair):
    a, b = pair
    batch_a = torch.cat([to_tensor(a), to_tensor(a)])
    batch_b = torch.cat([to_tensor(b), to_tensor(a)])
    values = psnr_torch(batch_a, batch_b)
    assert values.shape == (2,) and torch.isinf(values[1]) and values[0].item() == pytest.approx(psnr(a, b))
    assert ssim_torch(batch_a, batch_b)[1].item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "fn,args,message",
    [
        (psnr, (np.zeros((8, 8, 3)), np.zeros((8, 9, 3))), r"same shape, got \(8, 8, 3\) and \(8, 9, 3\)"),
        (psnr, (np.zeros((8, 8, 3)), np.zeros((8, 8, 3)), 4), r"crop_border 4 leaves nothing of a 8x8 image"),
        (ssim, (np.zeros((8, 8, 3)), np.zeros((8, 8, 3))), r"at least 11x11"),
        (rgb_to_y, (np.zeros((8, 8, 4)),), r"expected an HxWx3 RGB image"),
        (psnr_torch, (torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)), r"expected \(N, C, H, W\)"),
    ],
)
def test_bad_inputs_raise(fn, args, message):
    with pytest.raises(ValueError, match=message):
        fn(*args)
