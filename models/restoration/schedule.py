"""Which frames form each window: ``num_frame`` frames around the centre, completed at the ends
of the clip, and (with scene-cut detection) never taken across a hard cut."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.transforms import temporal_indices


def scene_cut_before(previous: np.ndarray, frame: np.ndarray, threshold: float) -> bool:
    """Whether a hard cut separates two HxWx3 uint8 frames: mean absolute difference of their
    grey, 1/8-size thumbnails (0-255 scale) above ``threshold``."""
    def thumbnail(img: np.ndarray) -> np.ndarray:
        grey = img.astype(np.float32).mean(axis=2)
        h, w = grey.shape
        return grey[: h - h % 8, : w - w % 8].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))

    return float(np.abs(thumbnail(previous) - thumbnail(frame)).mean()) > threshold


def scene_cuts_of(frames: Sequence[np.ndarray], threshold: float) -> list[int]:
    """Indices of the frames that start a new shot (a hard cut just before them)."""
    return [i for i in range(1, len(frames)) if scene_cut_before(frames[i - 1], frames[i], threshold)]


def window_indices(center: int, shot: tuple[int, int], num_frame: int, padding: str) -> list[int]:
    """Frame indices of the window around ``center``, never leaving ``shot`` = [start, end).

    Shots too short for ``padding`` (e.g. fewer frames than the window) repeat their border
    frames ("replicate") instead.
    """
    start, end = shot
    try:
        local = temporal_indices(center - start, end - start, num_frame, padding)
    except ValueError:
        local = temporal_indices(center - start, end - start, num_frame, "replicate")
    return [start + i for i in local]


class WindowSchedule:
    """Windows of ``num_frame`` frames over a clip seen frame by frame, completed per ``padding``
    at the ends of the clip or of its shot. With ``cut_threshold`` (see ``scene_cut_before``),
    each frame is compared with the previous one as it arrives (``observe``) and a hard cut ends
    a shot."""

    def __init__(self, num_frame: int, padding: str = "reflection_circle", cut_threshold: float | None = None):
        self.num_frame, self.padding, self.cut_threshold = num_frame, padding, cut_threshold
        self.cuts: list[int] = []  # indices of the frames that start a new shot
        self.seen = 0  # frames observed so far
        self._previous: np.ndarray | None = None

    @property
    def reach(self) -> int:
        """How far from its centre any padding mode may take a frame."""
        return 2 * (self.num_frame // 2)

    def observe(self, frame: np.ndarray) -> None:
        """The next frame of the clip (HxWx3 uint8), in order."""
        if self.cut_threshold is not None and self._previous is not None and scene_cut_before(
                self._previous, frame, self.cut_threshold):
            self.cuts.append(self.seen)
        self._previous = frame
        self.seen += 1

    def skip_to(self, index: int) -> None:
        """Start observing at frame ``index`` (frames before it are not needed): only without
        scene-cut detection, which must see every frame."""
        if self.cut_threshold is not None and index > self.seen:
            raise ValueError("scene-cut detection must observe every frame; it cannot skip to a later one")
        self.seen, self._previous = max(self.seen, index), None

    def window(self, center: int) -> list[int]:
        """The window of ``center``. Frames up to ``center + reach`` must have been observed (or
        the clip ended before): an end of shot not yet seen lies beyond every index the window
        may take, so no end padding is applied early."""
        start = max([0] + [c for c in self.cuts if c <= center])
        end = min([c for c in self.cuts if c > center] + [self.seen])
        return window_indices(center, (start, end), self.num_frame, self.padding)
