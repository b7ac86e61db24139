"""Where restored frames go: a PNG folder, a video file, comparison panels. Each sink builds its
result in a partial folder beside the destination and moves it there complete (``commit``);
an interrupted run keeps the partial folder (``keep``) so that ``--resume`` can continue it.

A sink says how many frames it holds from the first one (``completed``) and from which frame it
can continue (``rewind``); every frame it holds is complete on disk (written under a temporary
name and renamed), so a run killed at any moment loses at most the frame being written.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from data.storage import is_complete_png, read_image, write_png
from data.video_file import Colour
from models.outputs import OutputError, OutputFolder, PartialFolder, check_output_file

from .encoding import CONTAINERS, FrameTiming, SegmentWriter, VideoEncoding, join_segments
from .resume import record_or_check

logger = logging.getLogger(__name__)


def leading_complete(paths: list[Path]) -> int:
    """How many of ``paths``, from the first, are complete PNG files."""
    present = {p.name for p in paths[0].parent.iterdir()} if paths and paths[0].parent.is_dir() else set()
    count = 0
    for path in paths:
        if path.name not in present or not is_complete_png(path):
            break
        count += 1
    return count


class PngFolderSink:
    """Frames as ``<folder>/<name>.png`` (plus any side files), written into ``<folder>.partial``
    and swapped in by ``commit`` (see ``models.outputs.OutputFolder``: ``overwrite`` replaces only
    an earlier result of ours). ``names``: the frames' names in order; ``settings``: the run's
    record (``models.restoration.resume``); ``resume``: continue an interrupted run's folder."""

    def __init__(self, folder: Path, names: list[str], settings: dict, overwrite: bool = False,
                 resume: bool = False):
        self.output = OutputFolder(folder, overwrite, resume)
        self.path = self.output.path  # where files go until commit
        self.names = names
        record_or_check(self.output.partial, {**settings, "output": "png"})

    @property
    def resumed(self) -> bool:
        """Whether this sink continues an interrupted run's partial folder."""
        return self.output.resumed

    def completed(self) -> int:
        return leading_complete([self.path / f"{name}.png" for name in self.names])

    def rewind(self, start: int) -> int:
        """Continue from frame ``start`` (any frame up to ``completed()``: later ones are rewritten)."""
        return start

    def write(self, index: int, name: str, rgb: np.ndarray) -> None:
        write_png(self.path / f"{name}.png", rgb)

    def commit(self) -> None:
        self.output.commit()

    def keep(self) -> None:
        """Stop here, keeping the partial folder for ``--resume``."""

    def discard(self) -> None:
        self.output.discard()


class VideoFileSink:
    """Frames encoded into the video file ``path`` (container by suffix, see ``CONTAINERS``).

    The partial folder ``<path>.partial`` holds closed segments of ``segment_frames`` frames
    (``segments/<k>.<suffix>``, see ``encoding``) and, until its segment is closed, each frame of
    the open segment as a PNG (``pending/<index>.png``), so an interrupted run continues from its
    last frame. ``commit`` joins the segments with ``copy_from``'s streams ``copy_streams``
    (audio, subtitles) into ``path`` (replaced only with ``overwrite``) and removes the folder.
    """

    def __init__(self, path: Path, encoding: VideoEncoding, timing: FrameTiming, size: tuple[int, int],
                 colour: Colour, settings: dict, *, sample_aspect_ratio=None, copy_from: Path | None = None,
                 copy_streams: list[int] = (), segment_frames: int = 120, overwrite: bool = False,
                 resume: bool = False):
        """``size``: (width, height) of the restored frames."""
        self.final, self.encoding, self.timing, self.size, self.colour = path, encoding, timing, size, colour
        self.sample_aspect_ratio, self.copy_from, self.copy_streams = sample_aspect_ratio, copy_from, list(copy_streams)
        self.segment_frames, self.overwrite = segment_frames, overwrite
        self.suffix, self.format = path.suffix.lower(), CONTAINERS[path.suffix.lower()]
        self.partial = PartialFolder(path, resume)
        self.path = self.partial.path
        record_or_check(self.partial, {**settings, "output": {
            "video": self.suffix, "encoding": encoding.settings(), "timing": timing.settings(),
            "segment_frames": segment_frames, "size": list(size)}})
        (self.path / "segments").mkdir(exist_ok=True)
        (self.path / "pending").mkdir(exist_ok=True)
        self._writer: SegmentWriter | None = None
        self._segment = -1  # the segment the writer encodes
        self._drop_pending_of_closed_segments()

    @property
    def resumed(self) -> bool:
        """Whether this sink continues an interrupted run's partial folder."""
        return self.partial.resumed

    @property
    def count(self) -> int:
        return len(self.timing.pts)

    def _segment_path(self, segment: int) -> Path:
        return self.path / "segments" / f"{segment:06d}{self.suffix}"

    def _pending_path(self, index: int) -> Path:
        return self.path / "pending" / f"{index:08d}.png"

    def _segment_range(self, segment: int) -> range:
        return range(segment * self.segment_frames, min((segment + 1) * self.segment_frames, self.count))

    def _closed_segments(self) -> int:
        closed = 0
        while self._segment_path(closed).is_file():
            closed += 1
        return closed

    def _drop_pending_of_closed_segments(self) -> None:
        """Pending frames whose segment was closed (a run killed in between) are not needed."""
        boundary = self._closed_segments() * self.segment_frames
        for png in (self.path / "pending").glob("*.png"):
            if png.stem.isdigit() and int(png.stem) < boundary:
                png.unlink()

    def completed(self) -> int:
        closed = self._closed_segments()
        start = min(closed * self.segment_frames, self.count)
        pending = [self._pending_path(i) for i in range(start, min(start + self.segment_frames, self.count))]
        return start + leading_complete(pending)

    def rewind(self, start: int) -> int:
        """Continue from frame ``start``, or from the start of its segment when that segment is
        closed already (its frames are no longer kept separately); returns the frame chosen."""
        closed = self._closed_segments()
        segment = start // self.segment_frames
        if segment < closed:
            for later in range(segment, closed):
                self._segment_path(later).unlink()
            start = segment * self.segment_frames
        for png in (self.path / "pending").glob("*.png"):
            if not png.stem.isdigit() or int(png.stem) >= start:
                png.unlink()
        return start

    def write(self, index: int, name: str, rgb: np.ndarray) -> None:
        segment, frames = index // self.segment_frames, self._segment_range(index // self.segment_frames)
        if self._writer is None or self._segment != segment:
            self._open(segment, until=index)
        if index != frames[-1]:  # the last frame of a segment is kept by the segment itself
            write_png(self._pending_path(index), rgb)
        self._writer.write(rgb, self.timing.pts[index], self.timing.durations[index])
        if index == frames[-1]:
            self._writer.close()
            self._writer = None
            for i in frames:
                self._pending_path(i).unlink(missing_ok=True)

    def _open(self, segment: int, until: int) -> None:
        """Start encoding ``segment``, first with its frames kept from an earlier run (up to ``until``)."""
        self._abandon_writer()
        self._writer = SegmentWriter(self._segment_path(segment), self.format, self.encoding, self.size,
                                     self.timing.time_base, self.colour, self.sample_aspect_ratio)
        self._segment = segment
        for index in range(segment * self.segment_frames, until):
            self._writer.write(read_image(self._pending_path(index)), self.timing.pts[index],
                               self.timing.durations[index])

    def _abandon_writer(self) -> None:
        if self._writer is not None:
            self._writer.abandon()
            self._writer = None

    def commit(self) -> None:
        """Join the segments (and the copied streams) into the final file."""
        segments = [self._segment_path(k) for k in range(self._closed_segments())]
        closed_frames = min(len(segments) * self.segment_frames, self.count)
        if closed_frames != self.count:
            raise OutputError(f"{self.path}: holds {closed_frames} of {self.count} frames; cannot finish the video")
        joined = self.path / f"joined{self.suffix}"
        joined.unlink(missing_ok=True)
        join_segments(segments, joined, self.format, self.copy_from, self.copy_streams)
        check_output_file(self.final, [], self.overwrite)  # it may have appeared during a long run
        if self.overwrite:
            os.replace(joined, self.final)
        else:
            os.link(joined, self.final)  # fails rather than replace a file that appeared meanwhile
        shutil.rmtree(self.path)

    def keep(self) -> None:
        """Stop here, keeping the closed segments and pending frames for ``--resume``."""
        self._abandon_writer()

    def discard(self) -> None:
        self._abandon_writer()
        self.partial.discard()


def side_by_side(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels of equal size next to each other (RGB), each labelled in its top-left corner in
    white on a dark box (readable on any picture), the text scaled to the panel's height."""
    height = panels[0].shape[0]
    scale = max(0.4, min(height / 500, 2.0))
    thickness = max(1, round(scale * 2))
    labelled = []
    for panel, label in zip(panels, labels, strict=True):
        panel = np.ascontiguousarray(panel).copy()
        (width, text_height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        pad = max(2, round(4 * scale))
        box_bottom = min(text_height + baseline + 2 * pad, panel.shape[0])
        box_right = min(width + 2 * pad, panel.shape[1])
        panel[:box_bottom, :box_right] = panel[:box_bottom, :box_right] // 4  # darken under the text
        cv2.putText(panel, label, (pad, pad + text_height), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)
        labelled.append(panel)
    return np.concatenate(labelled, axis=1)
