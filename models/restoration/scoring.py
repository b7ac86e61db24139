"""Scores of restored footage against its ground truth, next to the bicubic baseline's.

Protocol (recorded in every table): PSNR and SSIM on RGB, 8-bit frames, no border crop.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from data.storage import IMAGE_EXTENSIONS, DataError, natural_key, read_image
from data.video_file import VideoFileReader
from metrics import psnr, ssim

logger = logging.getLogger(__name__)

PROTOCOL = "PSNR/SSIM on RGB, 8-bit frames, no border crop"
METRIC_KEYS = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")


class GroundTruthFolder:
    """Ground-truth frames for the input's frames ``names`` (in order), from ``source``:

    - a folder holding an image named as each input frame (``<name>.png``, or another image
      suffix; a video input's frames are named ``00000000``, ``00000001``, ...), matched by name;
    - else a folder holding exactly as many images as the input has frames: matched in order
      (natural order of their names, e.g. ``frame_1.png`` ... ``frame_120.png``);
    - a video file with as many frames as the input: matched in order.
    """

    def __init__(self, source: Path, names: list[str] | None = None):
        self.folder = source
        self.by_order: list[Path] | None = None
        self.video: VideoFileReader | None = None
        if source.is_file():
            self.video = VideoFileReader(source)
            if names is not None and self.video.num_frames != len(names):
                raise DataError(f"--gt {source}: a video of {self.video.num_frames} frames; the input has "
                                f"{len(names)}")
            return
        if not source.is_dir():
            raise DataError(f"--gt {source}: no such folder or video file")
        if names is None:
            return
        images = sorted((p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                        key=lambda p: natural_key(p.name))
        stems = {p.stem for p in images}
        if all(name in stems for name in names):
            return
        if len(images) == len(names):
            logger.info("--gt %s: no image named as the input's frames (%s, ...): matching its %d images in order "
                        "(%s ... %s)", source, names[0], len(images), images[0].name, images[-1].name)
            self.by_order = images
            return
        missing = next(name for name in names if name not in stems)
        raise DataError(f"--gt {source}: holds {len(images)} images, none named {missing}.*; the input has "
                        f"{len(names)} frames ({names[0]} ... {names[-1]})",
                        hint="name the ground-truth frames as the input's, or give exactly one image per input "
                             "frame (matched in natural order), or a video with as many frames")

    def read(self, name: str, index: int | None = None) -> np.ndarray:
        """Frame ``name`` (the input's ``index``-th) as HxWx3 uint8 RGB."""
        if self.video is not None:
            return self.video.read(index)
        if self.by_order is not None:
            return read_image(self.by_order[index])
        for suffix in IMAGE_EXTENSIONS:
            path = self.folder / f"{name}{suffix}"
            if path.is_file():
                return read_image(path)
        raise DataError(f"--gt {self.folder}: no ground-truth frame named {name}.* ({', '.join(IMAGE_EXTENSIONS)})")


class Scorer:
    """PSNR/SSIM (RGB, no border crop) of each restored frame and of its bicubic baseline.

    With ``journal`` (a CSV file), every frame's scores are appended to it as they come, and
    the scores an interrupted run wrote there are read back (``completed``, ``rewind``).
    """

    def __init__(self, journal: Path | None = None) -> None:
        self.values: dict[str, list[float]] = {key: [] for key in METRIC_KEYS}
        self.journal = journal
        if journal is not None and journal.is_file():
            self._read_journal()

    def _read_journal(self) -> None:
        """The rows of frames 0, 1, ... (a row cut short by a crash ends them)."""
        with open(self.journal, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    if int(row["frame"]) != len(self) or not row.get(METRIC_KEYS[-1]):
                        break
                    values = {key: float(row[key]) for key in METRIC_KEYS}
                except (KeyError, TypeError, ValueError):
                    break
                for key, value in values.items():
                    self.values[key].append(value)

    def completed(self) -> int:
        return len(self)

    def rewind(self, start: int) -> int:
        """Forget the scores of frames ``start`` and later (also in the journal)."""
        for key in METRIC_KEYS:
            del self.values[key][start:]
        if self.journal is not None:
            tmp = self.journal.with_name(f".{self.journal.name}.{os.getpid()}.tmp")
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["frame", *METRIC_KEYS])
                for index in range(len(self)):
                    writer.writerow([index, *(f"{self.values[key][index]:.6f}" for key in METRIC_KEYS)])
            os.replace(tmp, self.journal)
        return start

    def add(self, restored: np.ndarray, bicubic: np.ndarray, gt: np.ndarray) -> None:
        """HxWx3 uint8 RGB frames of one size (the next frame in order)."""
        values = {"psnr": psnr(restored, gt), "ssim": ssim(restored, gt), "bicubic_psnr": psnr(bicubic, gt),
                  "bicubic_ssim": ssim(bicubic, gt)}
        if self.journal is not None:
            if not self.journal.is_file():
                self.rewind(len(self))  # the header
            with open(self.journal, "a", newline="") as handle:
                csv.writer(handle).writerow([len(self), *(f"{values[key]:.6f}" for key in METRIC_KEYS)])
        for key, value in values.items():
            self.values[key].append(float(value))

    def __len__(self) -> int:
        return len(self.values["psnr"])

    def mean(self, key: str) -> float | None:
        return float(np.mean(self.values[key])) if self.values[key] else None

    def table(self, header: dict[str, str] | None = None) -> str:
        """A one-row markdown table of the means, after ``header`` lines (e.g. weights, precision)
        and the protocol."""
        mean = {key: self.mean(key) for key in self.values}
        lines = [f"- {key}: {value}" for key, value in (header or {}).items()] + [f"- protocol: {PROTOCOL}"]
        return ("\n".join(lines) + "\n\n"
                f"| frames | PSNR | SSIM | bicubic PSNR | bicubic SSIM |\n|---|---|---|---|---|\n"
                f"| {len(self)} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['bicubic_psnr']:.2f} | "
                f"{mean['bicubic_ssim']:.4f} |")
