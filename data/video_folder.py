"""Frames of a user's own footage: a folder of images (natural sort, OpenCV) or a video file (FFmpeg
through PyAV, ``data.video_file``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from data.clips import check_no_gaps
from data.storage import IMAGE_EXTENSIONS, DataError, natural_key, read_image
from data.transforms import frames_to_tensor, temporal_indices
from data.video_file import VideoFileReader

FOLDER_GAP_REMEDY = "add the missing frames, number the frames consecutively, or allow gaps (test.py --allow-gaps)"

__all__ = ["FOLDER_GAP_REMEDY", "VideoFileReader", "VideoFolderDataset"]


class VideoFolderDataset(Dataset):
    """One item per frame of ``input`` (image folder or video file):
    ``{"lq": (num_frame, 3, h, w) float32 RGB in [0, 1], "key": frame name, "clip": input name,
    "frame_idx": int, "num_frames": int}``; windows padded per ``padding`` at the ends.
    Every frame must have the first frame's size (checked as frames are read).

    Image names that share a numbering (``frame_0001.png``, ``frame_0002.png``, ...) must not skip a
    number: a gap is a DataError naming the missing numbers at construction, unless
    ``allow_gaps`` (then windows join the frames on either side of the gap, as if consecutive).
    Other names are taken in natural order. A video file's frames are named by their index,
    ``00000000``, ``00000001``, ... (``video.info`` has their timestamps). Errors about the data are
    DataError naming the file.
    """

    def __init__(
        self,
        input: str | os.PathLike,
        num_frame: int = 5,
        padding: str = "reflection_circle",
        allow_gaps: bool = False,
    ) -> None:
        path = Path(input)
        self.num_frame, self.padding = num_frame, padding
        self.clip = path.stem if path.is_file() else path.name
        if path.is_dir():
            self.files = sorted(
                (p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                key=lambda p: natural_key(p.name),
            )
            if not self.files:
                raise DataError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            self.video = None
            self.names = [p.stem for p in self.files]
            if not allow_gaps:
                check_no_gaps(self.names, str(path), remedy=FOLDER_GAP_REMEDY)
            self.shape = read_image(self.files[0]).shape
        elif path.is_file():
            self.video = VideoFileReader(path)
            self.names = [f"{i:08d}" for i in range(self.video.num_frames)]
            self.shape = self.video.shape
        else:
            raise FileNotFoundError(f"{path}: no such folder or video file")
        temporal_indices(0, len(self.names), num_frame, padding)  # too-short input fails here

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as HxWx3 uint8 RGB; a size different from frame 0 raises DataError."""
        if self.video is not None:
            frame, what = self.video.read(index), f"{self.video.path} frame {index}"
        else:
            frame, what = read_image(self.files[index]), str(self.files[index])
        if frame.shape != self.shape:
            raise DataError(
                f"{what}: frame size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's "
                f"{self.shape[1]}x{self.shape[0]} (mixed frame sizes)"
            )
        return frame

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        window = temporal_indices(index, len(self.names), self.num_frame, self.padding)
        lqs = [self.read_frame(j) for j in window]
        return {
            "lq": frames_to_tensor(lqs),
            "key": self.names[index],
            "clip": self.clip,
            "frame_idx": index,
            "num_frames": len(self.names),
        }
