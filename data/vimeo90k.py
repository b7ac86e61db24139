"""Vimeo-90K training dataset: septuplets ``<seq>/<id>/im1..im7``, GT = centre frame im4."""

from __future__ import annotations

import os
import random

from torch.utils.data import Dataset

from data.clips import read_frames
from data.storage import DataError, open_store, read_clip_meta
from data.transforms import training_sample

SEPTUPLET = 7
CENTER = 4  # 1-based frame number of the GT frame


def septuplet_frames(num_frame: int) -> list[str]:
    """Names of the ``num_frame`` frames centred on im4: 5 -> ['im2', ..., 'im6']."""
    if num_frame < 1 or num_frame % 2 == 0 or num_frame > SEPTUPLET:
        raise ValueError(f"num_frame must be odd and <= {SEPTUPLET} for Vimeo-90K, got {num_frame}")
    half = num_frame // 2
    return [f"im{j}" for j in range(CENTER - half, CENTER + half + 1)]


class Vimeo90KDataset(Dataset):
    """Items ``{"lq": (num_frame, 3, gt_size/scale, ...), "gt": (3, gt_size, gt_size), "key": "00001/0001"}``,
    float32 RGB in [0, 1].

    ``meta_info_file``: ``sep_trainlist.txt`` or BasicSR's ``meta_info_Vimeo90K_train_GT.txt``.
    GT store keys ``00001/0001/im4``; LR store keys ``00001/0001/im1`` ... ``im7``.
    Every LR frame read must have the size of the window's first frame, and the GT that size x
    ``scale`` (else DataError naming the store and key).
    """

    def __init__(
        self,
        dataroot_gt: str | os.PathLike,
        dataroot_lq: str | os.PathLike,
        meta_info_file: str | os.PathLike,
        num_frame: int = 7,
        gt_size: int = 256,
        scale: int = 4,
        random_reverse: bool = False,
        use_hflip: bool = True,
        use_rot: bool = True,
        dataset_enlarge_ratio: int = 1,
        io_backend: str = "auto",
    ) -> None:
        self.frames = septuplet_frames(num_frame)
        self.gt_store = open_store(dataroot_gt, io_backend)
        self.lq_store = open_store(dataroot_lq, io_backend)
        self.keys = [clip for clip, _ in read_clip_meta(meta_info_file)]
        self.gt_size, self.scale = gt_size, scale
        self.random_reverse, self.use_hflip, self.use_rot = random_reverse, use_hflip, use_rot
        self.enlarge = int(dataset_enlarge_ratio)
        first = self.keys[0]
        if f"{first}/im{CENTER}" not in self.gt_store:
            raise DataError(f"{self.gt_store}: GT frame {first}/im{CENTER} (first listed) is missing")
        if f"{first}/{self.frames[0]}" not in self.lq_store:
            raise DataError(
                f"{self.lq_store}: LR frame {first}/{self.frames[0]} (first listed) is missing"
            )

    def __len__(self) -> int:
        return len(self.keys) * self.enlarge

    def __getitem__(self, index: int) -> dict:
        key = self.keys[index % len(self.keys)]
        names = self.frames[::-1] if self.random_reverse and random.random() < 0.5 else self.frames
        lqs = read_frames(self.lq_store, key, names, reference=self.frames[0])
        gt_key = f"{key}/im{CENTER}"
        gt = self.gt_store.read(gt_key)  # the only GT frame: checked against the LR size
        return training_sample(lqs, gt, key, self.gt_size, self.scale, self.use_hflip, self.use_rot,
                               what=self.gt_store.where(gt_key))
