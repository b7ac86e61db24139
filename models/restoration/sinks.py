"""Where restored frames go: a PNG folder, a video file, comparison panels. Each sink writes
beside its destination and appears there complete (``commit``), or not at all (``discard``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data.storage import write_png
from models.outputs import OutputError, OutputFolder, partial_file

VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class PngFolderSink:
    """Frames as ``<folder>/<name>.png`` (plus any side files), written into ``<folder>.partial``
    and swapped in by ``commit`` (see ``models.outputs.OutputFolder``: ``overwrite`` replaces only
    an earlier result of ours)."""

    def __init__(self, folder: Path, overwrite: bool = False):
        self.output = OutputFolder(folder, overwrite)
        self.path = self.output.path  # where files go until commit

    def write(self, name: str, rgb: np.ndarray) -> None:
        write_png(self.path / f"{name}.png", rgb)

    def commit(self) -> None:
        self.output.commit()

    def discard(self) -> None:
        self.output.discard()


class VideoFileSink:
    """Frames encoded into a video file (container by suffix, see ``VIDEO_FOURCC``), written under
    a temporary name beside ``path`` and renamed by ``commit``."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        """``size``: (width, height) of the frames."""
        if path.suffix.lower() not in VIDEO_FOURCC:
            raise OutputError(f"{path}: unsupported video container {path.suffix!r} (use {', '.join(VIDEO_FOURCC)})")
        self.path, self.partial = path, partial_file(path)
        fourcc = VIDEO_FOURCC[path.suffix.lower()]
        self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*fourcc), fps, size)
        if not self._writer.isOpened():
            self.discard()
            raise OutputError(f"{path}: OpenCV cannot encode {fourcc} into {path.suffix} on this machine")

    def write(self, name: str, rgb: np.ndarray) -> None:
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def commit(self) -> None:
        self._writer.release()
        self.partial.replace(self.path)

    def discard(self) -> None:
        self._writer.release()
        self.partial.unlink(missing_ok=True)


def side_by_side(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels of equal size next to each other, each labelled in its top-left corner (RGB)."""
    labelled = []
    for panel, label in zip(panels, labels):
        panel = np.ascontiguousarray(panel)
        cv2.putText(panel, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        labelled.append(panel)
    return np.concatenate(labelled, axis=1)
