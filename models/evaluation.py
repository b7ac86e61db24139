"""Evaluation of a network on a test dataset: PSNR/SSIM averaged as the EDVR papers report.

Outputs are clamped to [0, 1] and quantised to 8 bits before measuring (as when they
are saved as PNG, BasicSR's protocol); ground truth comes from 8-bit frames.

The averaging rule is the test dataset's ``averaging`` attribute (``data.video_test``):
``"clips"`` (REDS4, Vid4: each clip's frames are averaged, then the clips) or ``"frames"``
(Vimeo-90K-T: every frame weighs the same, one group). Per-clip means are always kept.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.video_test import AVERAGE_OVER_CLIPS, AVERAGE_OVER_FRAMES, AVERAGING_RULES
from metrics import psnr_torch, ssim_torch

from .inference import restore_window

METRIC_FUNCTIONS = {"psnr": psnr_torch, "ssim": ssim_torch}


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

    def write_csv(self, path: Path) -> None:
        """Columns ``clip, frames, <metrics>``; the last row is the protocol's average (``average_label``)."""
        names = self.metric_names
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["clip", "frames", *names])
            for clip, values in self.clips.items():
                writer.writerow([clip, self.frames.get(clip, ""), *(f"{values[n]:.6f}" for n in names)])
            writer.writerow([self.average_label, self.total_frames, *(f"{self.mean(n):.6f}" for n in names)])


def quantize(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (what a saved PNG holds)."""
    return (img.clamp(0, 1) * 255).round() / 255


@torch.no_grad()
def evaluate(
    net: nn.Module,
    dataset: Dataset,
    name: str,
    metrics: Mapping[str, object],
    device: torch.device,
    scale: int = 4,
    multiple: int = 4,
    num_workers: int = 0,
    save_dir: Path | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> EvalResult:
    """Restore every item of ``dataset`` and measure it against its ``gt``.

    ``metrics``: metric name ("psnr", "ssim") -> options with ``crop_border`` and
    ``test_y_channel``. Frames are averaged per clip; ``EvalResult.mean`` then follows the
    dataset's ``averaging`` rule ("clips" when it declares none).
    ``save_dir``: restored frames are written there as ``<clip>/<frame>.png``.
    ``scale``/``multiple``: output scale and the size multiple the network needs (frames are
    reflect-padded to it and cropped back; 16 for hr_in networks, 1 for the bicubic baseline).
    """
    result = EvalResult(name, averaging=getattr(dataset, "averaging", AVERAGE_OVER_CLIPS))  # checks the rule
    was_training = net.training
    net.eval()
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    preview = None
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    pyramids, pyramids_clip = {}, None  # feature pyramids of the current clip's frames, reused by its windows
    for item in tqdm(loader, desc=f"eval {name}", unit="frame", disable=not progress, leave=False):
        window = item["window"][0].tolist() if "window" in item else None
        if item["clip"][0] != pyramids_clip:
            pyramids, pyramids_clip = {}, item["clip"][0]
        output = restore_window(net, item["lq"].to(device), multiple=multiple, scale=scale, amp_dtype=amp_dtype,
                                window=window, pyramids=pyramids if window is not None else None)
        output = quantize(output)
        if preview is None:
            preview = output[0].cpu()
        if save_dir is not None:
            _save_png(output[0], save_dir / f"{item['key'][0]}.png")
        if "gt" not in item:
            continue
        gt = item["gt"].to(device).double()
        for metric, options in metrics.items():
            value = METRIC_FUNCTIONS[metric](output.double(), gt, crop_border=options.crop_border,
                                             test_y_channel=options.test_y_channel).item()
            sums[item["clip"][0]][metric].append(value)
    net.train(was_training)
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


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB array as PNG."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write {path}")


def _save_png(img: Tensor, path: Path) -> None:
    """(3, H, W) RGB in [0, 1] -> 8-bit PNG (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
