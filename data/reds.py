"""REDS training dataset: random neighbour windows from clip folders, paired random crops."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence

from torch.utils.data import Dataset

from data.clips import fill_gaps, format_ranges, read_frames
from data.storage import CachedStore, DataError, group_by_clip, open_store, read_clip_meta
from data.transforms import training_sample

logger = logging.getLogger(__name__)

REDS4_CLIPS = ("000", "011", "015", "020")
OFFICIAL_VAL_CLIPS = tuple(f"{i:03d}" for i in range(240, 270))
VAL_PARTITIONS = {"REDS4": REDS4_CLIPS, "official": OFFICIAL_VAL_CLIPS}


class REDSDataset(Dataset):
    """Items ``{"lq": (T, 3, gt_size/scale, gt_size/scale), "gt": (3, gt_size, gt_size),
    "key": "clip/frame"}``, float32 RGB in [0, 1]; ``lq`` holds ``num_frame`` frames around the GT frame.

    Clips and their lengths come from ``meta_info_file`` (lines ``000 100 (720,1280,3)``, frames
    named ``00000000``...) or, without one, from the GT store's keys. Clips of ``val_partition``
    ("REDS4", "official" or None) are excluded. Each item is one frame of one clip (the list
    repeated ``dataset_enlarge_ratio`` times); the neighbour ``interval`` is drawn from
    ``interval_list``, and when the window does not fit around that frame a feasible centre is
    drawn at random.

    Checks: every frame read (LR window and GT) must have the size of its clip's first frame in
    its store, and the GT that size x ``scale`` (else DataError naming the store and key). Clips
    listed from the GT store (no ``meta_info_file``) may have gaps in their frame numbering:
    they are logged at construction, and an item whose window needs a missing frame raises
    DataError naming the clip and the missing frames, so ``datasets.train.skip_bad_frames: true``
    skips exactly those windows (logged) and trains on the rest; by default the run stops there.
    (With a ``meta_info_file`` the frames are ``00000000``... and a missing one fails its read.)

    ``cache_frames``: keep every decoded frame in memory (``CachedStore``, per worker process), for
    datasets that fit in memory such as the quickstart's.
    """

    def __init__(
        self,
        dataroot_gt: str | os.PathLike,
        dataroot_lq: str | os.PathLike,
        meta_info_file: str | os.PathLike | None = None,
        val_partition: str | None = "REDS4",
        num_frame: int = 5,
        gt_size: int = 256,
        scale: int = 4,
        interval_list: Sequence[int] = (1,),
        random_reverse: bool = False,
        use_hflip: bool = True,
        use_rot: bool = True,
        dataset_enlarge_ratio: int = 1,
        io_backend: str = "auto",
        cache_frames: bool = False,
    ) -> None:
        if num_frame < 1 or num_frame % 2 == 0:
            raise ValueError(f"num_frame must be a positive odd number, got {num_frame}")
        if val_partition is not None and val_partition not in VAL_PARTITIONS:
            raise ValueError(
                f"val_partition must be one of {list(VAL_PARTITIONS)} or None, got {val_partition!r}"
            )
        if not interval_list or min(interval_list) < 1:
            raise ValueError(f"interval_list must hold positive integers, got {interval_list!r}")
        self.gt_store = open_store(dataroot_gt, io_backend)
        self.lq_store = open_store(dataroot_lq, io_backend)
        if cache_frames:
            self.gt_store, self.lq_store = CachedStore(self.gt_store), CachedStore(self.lq_store)
        self.num_frame, self.gt_size, self.scale = num_frame, gt_size, scale
        self.interval_list = list(interval_list)
        self.random_reverse, self.use_hflip, self.use_rot = random_reverse, use_hflip, use_rot
        self.enlarge = int(dataset_enlarge_ratio)

        if meta_info_file is not None:
            clips = {clip: [f"{i:08d}" for i in range(n)] for clip, n in read_clip_meta(meta_info_file)}
        else:
            clips = group_by_clip(self.gt_store.keys())
        excluded = set(VAL_PARTITIONS[val_partition]) if val_partition else set()
        # clip -> every frame name from the first to the last number; self.missing: the absent ones
        self.clips: dict[str, list[str]] = {}
        self.missing: dict[str, set[str]] = {}
        for clip, frames in clips.items():
            if clip not in excluded:
                self.clips[clip], self.missing[clip] = self._numbered_frames(clip, frames)
        if not self.clips:
            raise DataError(f"{self.gt_store}: no training clips left after excluding {val_partition!r}")
        shortest = (num_frame - 1) * min(self.interval_list) + 1
        for clip, frames in self.clips.items():
            if len(frames) < shortest:
                raise DataError(
                    f"clip {clip!r} has {len(frames)} frames; num_frame={num_frame} needs {shortest}"
                )
            for key in (f"{clip}/{frames[0]}", f"{clip}/{frames[-1]}"):
                for store in (self.gt_store, self.lq_store):
                    if key not in store:
                        raise DataError(f"{store}: frame {key!r} listed for clip {clip!r} is missing")
        self.index = [(clip, i) for clip, frames in self.clips.items() for i in range(len(frames))]

    def _numbered_frames(self, clip: str, frames: list[str]) -> tuple[list[str], set[str]]:
        """(the clip's frames with its numbering's gaps filled in, the names of the missing ones)."""
        filled, gaps = fill_gaps(frames)
        if gaps:
            logger.warning(
                "%s: clip %r has no frame numbered %s (a gap in its frame numbering): items whose window "
                "needs one fail (skipped with datasets.train.skip_bad_frames: true)",
                self.gt_store, clip, format_ranges(gaps))
        return filled, set(filled) - set(frames)

    def __len__(self) -> int:
        return len(self.index) * self.enlarge

    def __getitem__(self, index: int) -> dict:
        clip, center = self.index[index % len(self.index)]
        frames = self.clips[clip]
        half = self.num_frame // 2
        interval = random.choice([i for i in self.interval_list if 2 * half * i < len(frames)])
        if not half * interval <= center < len(frames) - half * interval:
            center = random.randint(half * interval, len(frames) - 1 - half * interval)
        neighbours = [frames[center + k * interval] for k in range(-half, half + 1)]
        if self.random_reverse and random.random() < 0.5:
            neighbours.reverse()
        key = f"{clip}/{frames[center]}"
        absent = [name for name in neighbours if name in self.missing[clip]]
        if absent:
            raise DataError(
                f"{self.gt_store}: clip {clip!r}: the window around frame {frames[center]} needs frames "
                f"{', '.join(sorted(absent))}, missing from the clip (a gap in its frame numbering)"
            )
        lqs = read_frames(self.lq_store, clip, neighbours, reference=frames[0])
        (gt,) = read_frames(self.gt_store, clip, [frames[center]], reference=frames[0])
        return training_sample(lqs, gt, key, self.gt_size, self.scale, self.use_hflip, self.use_rot,
                               what=self.gt_store.where(key))
