"""Evaluation of a network on a test dataset: PSNR/SSIM averaged as the EDVR papers report.

Outputs are clamped to [0, 1] and quantised to 8 bits before measuring (as when they
are saved as PNG, BasicSR's protocol); ground truth comes from 8-bit frames.

The averaging rule is the test dataset's ``averaging`` attribute (``data.video_test``):
``"clips"`` (REDS4, Vid4: each clip's frames are averaged, then the clips) or ``"frames"``
(Vimeo-90K-T: every frame weighs the same, one group). Per-clip means are always kept.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.storage import write_png
from data.video_test import AVERAGE_OVER_CLIPS, AVERAGE_OVER_FRAMES, AVERAGING_RULES
from metrics import METRICS

from .checkpoint import atomic_write
from .outputs import OutputFolder
from .restoration.engine import Engine

logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-clip means of each metric, and the test set's average under its ``averaging`` rule."""

    name: str
    clips: dict[str, dict[str, float]] = field(default_factory=dict)  # clip -> metric -> mean of its frames
    preview: Tensor | None = None  # the first restored frame, (3, H, W) in [0, 1] (e.g. for TensorBoard)
    averaging: str = AVERAGE_OVER_CLIPS  # "clips" or "frames" (see data.video_test)
    frames: dict[str, int] = field(default_factory=dict)  # clip -> frames measured (needed by "frames")

    def __post_init__(self) -> None:
        if self.averaging not in AVERAGING_RULES:
            raise ValueError(f"averaging must be one of {AVERAGING_RULES}, got {self.averaging!r}")

    @property
    def metric_names(self) -> list[str]:
        return list(next(iter(self.clips.values()), {}))

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    def mean(self, metric: str) -> float:
        """The protocol's average of ``metric``: the mean of the clip means ("clips"), or the
        mean over every frame ("frames": the clip means weighted by their frame counts)."""
        if self.averaging == AVERAGE_OVER_FRAMES:
            weighted = sum(values[metric] * self.frames[clip] for clip, values in self.clips.items())
            return float(weighted / sum(self.frames[clip] for clip in self.clips))
        return float(np.mean([values[metric] for values in self.clips.values()]))

    @property
    def average_label(self) -> str:
        """Names the rule of ``mean``: "average over clips" or "average over frames"."""
        return f"average over {self.averaging}"

    def table(self) -> str:
        """A markdown table: one row per clip (frames measured, means), then the protocol's average."""
        names = self.metric_names
        lines = ["| clip | frames | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for clip, values in self.clips.items():
            cells = [clip, str(self.frames.get(clip, "")), *(_fmt(n, values[n]) for n in names)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.averaging == AVERAGE_OVER_FRAMES:
            rule = f"all {self.total_frames} frames weigh the same"
        else:
            rule = f"mean of the {len(self.clips)} clip means"
        cells = [f"**{self.average_label}** ({rule})", str(self.total_frames)]
        lines.append("| " + " | ".join(cells + [_fmt(n, self.mean(n)) for n in names]) + " |")
        return "\n".join(lines)

    def save(self, stem: Path, label: str, settings: Mapping[str, str] | None = None) -> str:
        """Write ``<stem>.csv`` and ``<stem>.md`` (each complete or not at all); returns the markdown.

        ``settings`` (e.g. weights, precision, protocol) head the markdown. A table already at
        ``<stem>.md`` with other settings is kept: this one goes to ``<stem>-2.md`` (``-3``, ...),
        with a warning naming both; one with the same settings is replaced."""
        heading = f"## {self.name}: {label}\n\n" + "".join(f"- {k}: {v}\n" for k, v in (settings or {}).items())
        markdown = f"{heading}\n{self.table()}\n"
        target, number = stem, 1
        while target.with_suffix(".md").is_file() and not _same_heading(target.with_suffix(".md"), heading):
            number += 1
            target = stem.with_name(f"{stem.name}-{number}")
        if target != stem:
            logger.warning("%s was written with other settings and is kept; this table is %s", stem.with_suffix(".md"),
                           target.with_suffix(".md"))
        atomic_write(target.with_suffix(".md"), lambda handle: handle.write(markdown.encode()))
        atomic_write(target.with_suffix(".csv"), lambda handle: handle.write(self.csv_text().encode()))
        return markdown

    def csv_text(self) -> str:
        """Columns ``clip, frames, <metrics>``; the last row is the protocol's average (``average_label``)."""
        buffer = io.StringIO(newline="")
        self._write_csv(buffer)
        return buffer.getvalue()

    def write_csv(self, path: Path) -> None:
        """Columns ``clip, frames, <metrics>``; the last row is the protocol's average (``average_label``)."""
        with open(path, "w", newline="") as handle:
            self._write_csv(handle)

    def _write_csv(self, handle) -> None:
        names = self.metric_names
        writer = csv.writer(handle)
        writer.writerow(["clip", "frames", *names])
        for clip, values in self.clips.items():
            writer.writerow([clip, self.frames.get(clip, ""), *(f"{values[n]:.6f}" for n in names)])
        writer.writerow([self.average_label, self.total_frames, *(f"{self.mean(n):.6f}" for n in names)])


def _same_heading(path: Path, heading: str) -> bool:
    """Whether the table at ``path`` starts with ``heading`` (was written with the same settings)."""
    try:
        return path.read_text(encoding="utf-8").startswith(heading + "\n")
    except (OSError, UnicodeDecodeError):
        return False


def quantize(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (what a saved PNG holds)."""
    return (img.clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def evaluate(
    engine: Engine,
    dataset: Dataset,
    name: str,
    metrics: Mapping[str, object],
    device: torch.device,
    num_workers: int = 0,
    save_dir: Path | None = None,
    progress: bool = True,
    images: Path | None = None,
) -> EvalResult:
    """Restore every item of ``dataset`` with ``engine`` and measure it against its ``gt``.

    ``metrics``: metric name ("psnr", "ssim") -> options with ``crop_border`` and
    ``test_y_channel``. Frames are averaged per clip; ``EvalResult.mean`` then follows the
    dataset's ``averaging`` rule ("clips" when it declares none). Items that carry their
    window's clip indices (``window``) share the feature pyramids of the frames they share.
    ``save_dir``: restored frames are written there as ``<clip>/<frame>.png``; ``images``: the
    same into a result folder of ours, replaced only once complete (``models.outputs``).
    The network is in eval mode meanwhile, and back in its former mode afterwards.
    """
    if images is not None:
        with OutputFolder(images, overwrite=True) as folder:
            result = evaluate(engine, dataset, name, metrics, device, num_workers, folder.path, progress)
            folder.commit()
            return result
    result = EvalResult(name, averaging=getattr(dataset, "averaging", AVERAGE_OVER_CLIPS))  # checks the rule
    was_training = engine.net.training
    engine.net.eval()
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    preview = None
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    for item in tqdm(loader, desc=f"eval {name}", unit="frame", disable=not progress, leave=False):
        clip = item["clip"][0]
        keys = [(clip, i) for i in item["window"][0].tolist()] if "window" in item else None
        output = quantize(engine.restore_batch(item["lq"].to(device), keys))
        if preview is None:
            preview = output[0].cpu()
        if save_dir is not None:
            write_png(save_dir / f"{item['key'][0]}.png", to_uint8_image(output[0]))
        if "gt" not in item:
            continue
        gt = item["gt"].to(device).double()
        for metric, options in metrics.items():
            value = METRICS[metric](output.double(), gt, crop_border=options.crop_border,
                                    test_y_channel=options.test_y_channel).item()
            sums[clip][metric].append(value)
    engine.net.train(was_training)
    for clip, per_metric in sums.items():
        result.clips[clip] = {metric: _mean_finite(values) for metric, values in per_metric.items()}
        result.frames[clip] = len(next(iter(per_metric.values())))
    result.preview = preview
    return result


def _mean_finite(values: list[float]) -> float:
    """Mean over frames; a frame identical to its GT (PSNR inf) makes the clip inf too."""
    return math.inf if any(math.isinf(v) for v in values) else float(np.mean(values))


def _fmt(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "ssim" else f"{value:.2f}"


def to_uint8_image(img: Tensor) -> np.ndarray:
    """(3, H, W) RGB in [0, 1] -> HxWx3 uint8 (clamped, rounded)."""
    return (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
