"""Frames of a user's own footage: a folder of images (natural sort) or a video file (OpenCV)."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from data.clips import check_no_gaps
from data.storage import IMAGE_EXTENSIONS, DataError, natural_key
from data.transforms import frames_to_tensor, temporal_indices

FOLDER_GAP_REMEDY = "add the missing frames, number the frames consecutively, or allow gaps (test.py --allow-gaps)"
logger = logging.getLogger(__name__)


class VideoFileReader:
    """Random access to the frames of a video file, fast for in-order access.

    OpenCV seeking is not frame-exact for every codec, so frames are decoded sequentially; the
    last ``cache`` frames are kept, and a request behind them restarts decoding from the start.
    The capture is opened lazily per process (DataLoader workers each get their own).

    ``num_frames`` counts the frames that decode; when the container announces more
    (``CAP_PROP_FRAME_COUNT``: a truncated or damaged file), a warning gives both counts.
    """

    def __init__(self, path: str | os.PathLike, cache: int = 16) -> None:
        self.path = Path(path)
        self.cache_size = cache
        self._cap: cv2.VideoCapture | None = None
        self._pid: int | None = None
        self._next = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.num_frames, self.shape, self.announced_frames = self._scan()
        if self.num_frames < self.announced_frames:
            logger.warning(
                "%s: the container announces %d frames but only %d decode (truncated or damaged file?); "
                "the frames after frame %d are missing", self.path, self.announced_frames, self.num_frames,
                self.num_frames - 1)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_cap=None, _pid=None, _next=0, _cache=OrderedDict())
        return state

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot open this file as a video")
        return cap

    def _scan(self) -> tuple[int, tuple[int, int, int], int]:
        """(decodable frames (cheap ``grab``), the first frame's shape, frames the container announces
        (0 when it does not say))."""
        cap = self._open()
        announced = max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        ok, first = cap.read()
        if not ok:
            raise DataError(f"{self.path}: no decodable frames (the container announces {announced})")
        count = 1
        while cap.grab():
            count += 1
        cap.release()
        return count, first.shape, announced

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as HxWx3 uint8 RGB."""
        if index in self._cache:
            return self._cache[index]
        if self._cap is None or self._pid != os.getpid() or index < self._next:
            self._cap, self._pid, self._next = self._open(), os.getpid(), 0
            self._cache.clear()
        while self._next <= index:
            ok, bgr = self._cap.read()
            if not ok:
                raise DataError(
                    f"{self.path}: frame {self._next} could not be decoded ({self.num_frames} counted)"
                )
            self._cache[self._next] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            self._next += 1
        return self._cache[index]


class VideoFolderDataset(Dataset):
    """One item per frame of ``input`` (image folder or video file):
    ``{"lq": (num_frame, 3, h, w) float32 RGB in [0, 1], "key": frame name, "clip": input name,
    "frame_idx": int, "num_frames": int}``; windows padded per ``padding`` at the ends.
    Every frame must have the first frame's size (checked as frames are read).

    Image names that share a numbering (``frame_0001.png``, ``frame_0002.png``, ...) must not skip a
    number: a gap is a DataError naming the missing numbers at construction, unless
    ``allow_gaps`` (then windows join the frames on either side of the gap, as if consecutive).
    Other names are taken in natural order. Errors about the data are DataError naming the file.
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
            self.shape = self._read_image(self.files[0]).shape
        elif path.is_file():
            self.video = VideoFileReader(path)
            self.names = [f"{i:08d}" for i in range(self.video.num_frames)]
            self.shape = self.video.shape
        else:
            raise FileNotFoundError(f"{path}: no such folder or video file")
        temporal_indices(0, len(self.names), num_frame, padding)  # too-short input fails here

    @staticmethod
    def _read_image(path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{path}: not a readable image")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def read_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as HxWx3 uint8 RGB; a size different from frame 0 raises DataError."""
        if self.video is not None:
            frame, what = self.video.read(index), f"{self.video.path} frame {index}"
        else:
            frame, what = self._read_image(self.files[index]), str(self.files[index])
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
