"""Test datasets: every frame of every clip (REDS4, Vid4, ...) and Vimeo-90K-T centre frames."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from data.clips import check_no_gaps, read_frames
from data.storage import DataError, group_by_clip, open_store, read_clip_meta
from data.transforms import frames_to_tensor, temporal_indices
from data.vimeo90k import CENTER, septuplet_frames

# How an evaluation averages a test set's per-frame scores (the ``averaging`` attribute of each
# test dataset, read by ``models.evaluation.evaluate``):
AVERAGE_OVER_CLIPS = "clips"  # mean of each clip's frames, then the mean of the clip means (REDS4, Vid4)
AVERAGE_OVER_FRAMES = "frames"  # every restored frame weighs the same, one group (Vimeo-90K-T)
AVERAGING_RULES = (AVERAGE_OVER_CLIPS, AVERAGE_OVER_FRAMES)


def _check_scale(lq_shape: tuple, gt_shape: tuple, scale: int | None, what: str) -> None:
    if scale is not None and (gt_shape[0] != lq_shape[0] * scale or gt_shape[1] != lq_shape[1] * scale):
        raise DataError(
            f"{what}: GT frame is {gt_shape[1]}x{gt_shape[0]} but LR frame {lq_shape[1]}x{lq_shape[0]} "
            f"x scale {scale} is {lq_shape[1] * scale}x{lq_shape[0] * scale}"
        )


class VideoTestDataset(Dataset):
    """One item per frame: ``{"lq": (num_frame, 3, h, w), "gt": (3, H, W) (when dataroot_gt is
    given), "key": "clip/frame", "clip": str, "frame_idx": int, "num_frames": int, "window": (num_frame,)
    clip indices of the lq frames}``, float32 RGB in [0, 1]. Windows at clip borders are padded per ``padding`` (see ``temporal_indices``).

    Clips: ``clips`` (names), else those of ``meta_info_file``, else every clip of the LR store.
    Frame names are read from the LR store (natural order); a gap in a clip's frame numbering is a
    DataError at construction. Every frame read must have the size of its clip's first frame (in
    its store), and the GT the LR size x ``scale`` (when given), else DataError naming the key.

    Scores average per clip, then over clips (``averaging``: BasicSR's video SR protocol, as the
    EDVR paper reports REDS4 and Vid4).
    """

    averaging = AVERAGE_OVER_CLIPS

    def __init__(
        self,
        dataroot_lq: str | os.PathLike,
        dataroot_gt: str | os.PathLike | None = None,
        num_frame: int = 5,
        padding: str = "reflection_circle",
        clips: Sequence[str] | None = None,
        meta_info_file: str | os.PathLike | None = None,
        scale: int | None = 4,
        io_backend: str = "auto",
    ) -> None:
        self.lq_store = open_store(dataroot_lq, io_backend)
        self.gt_store = open_store(dataroot_gt, io_backend) if dataroot_gt is not None else None
        self.num_frame, self.padding, self.scale = num_frame, padding, scale
        if clips is None and meta_info_file is not None:
            clips = [clip for clip, _ in read_clip_meta(meta_info_file)]
        if clips is None:
            self.clips = group_by_clip(self.lq_store.keys())
        else:
            self.clips = {clip: [k.rpartition("/")[2] for k in self.lq_store.keys(clip)] for clip in clips}
        for clip, frames in self.clips.items():
            if not frames:
                raise DataError(f"{self.lq_store}: clip {clip!r} has no frames")
            check_no_gaps(frames, f"{self.lq_store}: clip {clip!r}")
            temporal_indices(0, len(frames), num_frame, padding)  # a clip too short fails here
            if self.gt_store is not None and f"{clip}/{frames[0]}" not in self.gt_store:
                raise DataError(f"{self.gt_store}: GT frame {clip}/{frames[0]} is missing")
        self.index = [(clip, i) for clip, frames in self.clips.items() for i in range(len(frames))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        clip, i = self.index[index]
        frames = self.clips[clip]
        window = temporal_indices(i, len(frames), self.num_frame, self.padding)
        lqs = read_frames(self.lq_store, clip, [frames[j] for j in window], reference=frames[0])
        key = f"{clip}/{frames[i]}"
        item = {
            "lq": frames_to_tensor(lqs),
            "key": key,
            "clip": clip,
            "frame_idx": i,
            "num_frames": len(frames),
            "window": torch.tensor(window),  # clip indices of the lq frames (lets evaluation reuse features)
        }
        if self.gt_store is not None:
            (gt,) = read_frames(self.gt_store, clip, [frames[i]], reference=frames[0])
            _check_scale(lqs[0].shape, gt.shape, self.scale, self.gt_store.where(key))
            item["gt"] = frames_to_tensor([gt])[0]
        return item


class Vimeo90KTestDataset(Dataset):
    """Vimeo-90K-T: one item per septuplet, restoring its centre frame im4:
    ``{"lq": (num_frame, 3, h, w), "gt": (3, H, W) (optional), "key": "00001/0266",
    "clip": "00001", "frame_idx": 3, "num_frames": 7}``. ``clip`` (the sequence folder) groups
    septuplets for per-clip tables. ``meta_info_file``: ``sep_testlist.txt``.

    Every LR frame read must have the size of the window's first frame, and the GT the LR size x
    ``scale`` (when given), else DataError naming the key. Scores average over all septuplets
    equally, one group (``averaging``: BasicSR's and the published Vimeo-90K-T protocol); the
    per-sequence-folder means are extra information.
    """

    averaging = AVERAGE_OVER_FRAMES

    def __init__(
        self,
        dataroot_lq: str | os.PathLike,
        meta_info_file: str | os.PathLike,
        dataroot_gt: str | os.PathLike | None = None,
        num_frame: int = 7,
        scale: int | None = 4,
        io_backend: str = "auto",
    ) -> None:
        self.frames = septuplet_frames(num_frame)
        self.lq_store = open_store(dataroot_lq, io_backend)
        self.gt_store = open_store(dataroot_gt, io_backend) if dataroot_gt is not None else None
        self.keys = [clip for clip, _ in read_clip_meta(meta_info_file)]
        self.scale = scale

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict:
        key = self.keys[index]
        lqs = read_frames(self.lq_store, key, self.frames, reference=self.frames[0])
        item = {
            "lq": frames_to_tensor(lqs),
            "key": key,
            "clip": key.split("/")[0],
            "frame_idx": CENTER - 1,
            "num_frames": 7,
        }
        if self.gt_store is not None:
            gt_key = f"{key}/im{CENTER}"
            gt = self.gt_store.read(gt_key)
            _check_scale(lqs[0].shape, gt.shape, self.scale, self.gt_store.where(gt_key))
            item["gt"] = frames_to_tensor([gt])[0]
        return item
