"""Frame-list transforms shared by the datasets: paired crop, flips/rotation, tensors, padding.

Frames are HxWx3 uint8 RGB numpy arrays until ``frames_to_tensor`` turns them into float32
tensors in [0, 1], (T, C, H, W).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from data.storage import DataError

PADDING_MODES = ("reflection_circle", "reflection", "replicate", "circle")


def temporal_indices(
    center: int, num_frames: int, window: int, padding: str = "reflection_circle"
) -> list[int]:
    """Indices of the ``window`` frames centred on ``center`` in a clip of ``num_frames`` frames.

    Positions outside [0, num_frames) are replaced per ``padding`` (example: window 5, clip of
    10 frames, centre 0 / centre 9):
      replicate          [0, 0, 0, 1, 2] / [7, 8, 9, 9, 9]  repeat the border frame
      reflection         [2, 1, 0, 1, 2] / [7, 8, 9, 8, 7]  mirror about the border frame
      reflection_circle  [4, 3, 0, 1, 2] / [7, 8, 9, 6, 5]  mirror the far side of the window
      circle             [3, 4, 0, 1, 2] / [7, 8, 9, 5, 6]  shift by the window length (i +- window)
    A clip too short for the window and mode raises DataError.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window (num_frame) must be a positive odd number, got {window}")
    if not 0 <= center < num_frames:
        raise ValueError(f"centre frame {center} outside the clip of {num_frames} frames")
    half, last = window // 2, num_frames - 1
    indices = []
    for i in range(center - half, center + half + 1):
        if i < 0:
            j = {
                "replicate": 0,
                "reflection": -i,
                "reflection_circle": center + half - i,
                "circle": window + i,
            }[padding]
        elif i > last:
            j = {
                "replicate": last,
                "reflection": 2 * last - i,
                "reflection_circle": center - half - (i - last),
                "circle": i - window,
            }[padding]
        else:
            j = i
        if not 0 <= j <= last:
            raise DataError(
                f"clip of {num_frames} frames is too short for a {window}-frame window with "
                f"padding={padding!r} (centre {center} needs frame {j})"
            )
        indices.append(j)
    return indices


def paired_random_crop(
    lqs: list[np.ndarray], gt: np.ndarray, gt_size: int, scale: int, what: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """Crop the same random region from every LR frame (gt_size/scale square) and the GT (gt_size).

    The GT crop starts at ``scale`` times the LR crop's top-left corner, so they stay aligned.
    ``what`` names the sample in errors.
    """
    if gt_size % scale:
        raise ValueError(f"gt_size {gt_size} must be divisible by scale {scale}")
    lq_size = gt_size // scale
    h, w = lqs[0].shape[:2]
    if gt.shape[0] != h * scale or gt.shape[1] != w * scale:
        raise DataError(
            f"{what}: GT frame is {gt.shape[1]}x{gt.shape[0]} but LR frame {w}x{h} x scale {scale} "
            f"is {w * scale}x{h * scale}"
        )
    if h < lq_size or w < lq_size:
        raise DataError(f"{what}: LR frame {w}x{h} is smaller than the LR crop {lq_size}x{lq_size}")
    top, left = random.randint(0, h - lq_size), random.randint(0, w - lq_size)
    lqs = [lq[top : top + lq_size, left : left + lq_size] for lq in lqs]
    gt = gt[top * scale : (top + lq_size) * scale, left * scale : (left + lq_size) * scale]
    return lqs, gt


def random_flip_rotate(
    frames: list[np.ndarray], hflip: bool = True, rotation: bool = True
) -> list[np.ndarray]:
    """Apply one random draw of hflip / vflip / transpose (the 8 dihedral transforms) to all frames.

    ``hflip`` enables the horizontal flip; ``rotation`` enables vflip and transpose (so the three
    together give 90-degree rotations).
    """
    do_hflip = hflip and random.random() < 0.5
    do_vflip = rotation and random.random() < 0.5
    do_transpose = rotation and random.random() < 0.5

    def apply(frame: np.ndarray) -> np.ndarray:
        if do_hflip:
            frame = frame[:, ::-1]
        if do_vflip:
            frame = frame[::-1]
        if do_transpose:
            frame = frame.transpose(1, 0, 2)
        return frame

    return [apply(frame) for frame in frames]


def frames_to_tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """HxWxC uint8 frames -> float32 tensor (T, C, H, W) in [0, 1]."""
    stacked = np.stack(frames).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(stacked)).float().div_(255.0)


def training_sample(
    lqs: list[np.ndarray],
    gt: np.ndarray,
    key: str,
    gt_size: int,
    scale: int,
    use_hflip: bool,
    use_rot: bool,
    what: str | None = None,
) -> dict:
    """Paired crop + identical flips/rotation -> {"lq": (T, C, h, w), "gt": (C, H, W), "key"};
    ``what`` names the GT frame in errors (its store and key; ``key`` by default)."""
    lqs, gt = paired_random_crop(lqs, gt, gt_size, scale, what or key)
    *lqs, gt = random_flip_rotate([*lqs, gt], hflip=use_hflip, rotation=use_rot)
    return {"lq": frames_to_tensor(lqs), "gt": frames_to_tensor([gt])[0], "key": key}
