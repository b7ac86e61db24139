"""Each test set's averaging rule, pinned against hand-computed PSNRs.

Frames are uniform grey, and the "network" upsamples the centre LR frame (nearest), so every
restored frame has the LR grey level and its PSNR is 20 log10(255 / |gt - lr|) (up to float32
rounding of the frames: 1e-4 dB). Clips have unequal frame counts, so averaging per clip and
over all frames give numbers 5 dB apart.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from data.video_test import AVERAGE_OVER_CLIPS, AVERAGE_OVER_FRAMES, VideoTestDataset, Vimeo90KTestDataset
from models.evaluation import EvalResult, evaluate
from models.restoration import Engine
from tests.builders import write_png

METRICS = {"psnr": SimpleNamespace(crop_border=0, test_y_channel=False)}
GT_GREY = 128
CLIP_A = {"lr": 127, "frames": 1}  # |diff| 1  -> 48.13 dB, one frame
CLIP_B = {"lr": 118, "frames": 3}  # |diff| 10 -> 28.13 dB, three frames


def psnr_of(lr: int) -> float:
    return 20 * math.log10(255 / abs(GT_GREY - lr))


PER_CLIP = (psnr_of(CLIP_A["lr"]) + psnr_of(CLIP_B["lr"])) / 2  # 38.13
PER_FRAME = (psnr_of(CLIP_A["lr"]) + 3 * psnr_of(CLIP_B["lr"])) / 4  # 33.13


class CentreUpsampler(nn.Module):
    """(B, T, 3, h, w) -> the centre frame, 4x nearest: (B, 3, 4h, 4w)."""

    scale, size_multiple, num_frame, center_frame_idx = 4, 1, 5, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[:, x.shape[1] // 2], scale_factor=4, mode="nearest")


def grey(value: int, size: int) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def run(dataset) -> EvalResult:
    return evaluate(Engine(CentreUpsampler()), dataset, "t", METRICS, torch.device("cpu"), progress=False)


def csv_rows(result: EvalResult, path: Path) -> list[list[str]]:
    result.write_csv(path)
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_clip_test_sets_average_per_clip_then_over_clips(tmp_path):
    for clip, spec in (("A", CLIP_A), ("B", CLIP_B)):
        for i in range(spec["frames"]):
            write_png(tmp_path / "lq" / clip / f"{i:08d}.png", grey(spec["lr"], 4))
            write_png(tmp_path / "gt" / clip / f"{i:08d}.png", grey(GT_GREY, 16))
    dataset = VideoTestDataset(tmp_path / "lq", tmp_path / "gt", num_frame=1)
    assert dataset.averaging == AVERAGE_OVER_CLIPS
    result = run(dataset)
    assert result.frames == {"A": 1, "B": 3}
    assert result.clips["A"]["psnr"] == pytest.approx(psnr_of(CLIP_A["lr"]), abs=1e-3)
    assert result.mean("psnr") == pytest.approx(PER_CLIP, abs=1e-3) and abs(PER_CLIP - PER_FRAME) > 4
    assert result.table().splitlines()[-1] == "| **average over clips** (mean of the 2 clip means) | 4 | 38.13 |"
    rows = csv_rows(result, tmp_path / "t.csv")
    assert [row[:2] for row in rows] == [["clip", "frames"], ["A", "1"], ["B", "3"], ["average over clips", "4"]]
    assert float(rows[-1][2]) == pytest.approx(PER_CLIP, abs=1e-3)


def test_vimeo90k_t_averages_over_all_septuplets(tmp_path):
    septuplets = [("00001/0001", CLIP_A["lr"])] + [(f"00002/000{i}", CLIP_B["lr"]) for i in range(1, 4)]
    for name, lr in septuplets:
        write_png(tmp_path / "lq" / name / "im4.png", grey(lr, 4))
        write_png(tmp_path / "gt" / name / "im4.png", grey(GT_GREY, 16))
    (tmp_path / "sep_testlist.txt").write_text("".join(f"{name}\n" for name, _ in septuplets))
    dataset = Vimeo90KTestDataset(tmp_path / "lq", tmp_path / "sep_testlist.txt", tmp_path / "gt", num_frame=1)
    assert dataset.averaging == AVERAGE_OVER_FRAMES
    result = run(dataset)
    assert result.frames == {"00001": 1, "00002": 3}  # per-sequence tables stay as extra information
    assert result.mean("psnr") == pytest.approx(PER_FRAME, abs=1e-3)
    assert result.table().splitlines()[-1] == "| **average over frames** (all 4 frames weigh the same) | 4 | 33.13 |"
    rows = csv_rows(result, tmp_path / "t.csv")
    assert rows[-1][:2] == ["average over frames", "4"] and float(rows[-1][2]) == pytest.approx(PER_FRAME, abs=1e-3)


def test_unknown_averaging_rule_is_refused(tmp_path):
    with pytest.raises(ValueError, match="averaging must be one of"):
        EvalResult("t", averaging="sequences")
    dataset = SimpleNamespace(averaging="median")
    with pytest.raises(ValueError, match="averaging must be one of"):
        evaluate(Engine(CentreUpsampler()), dataset, "t", METRICS, torch.device("cpu"), progress=False)


def test_identical_frame_makes_the_average_infinite():
    result = EvalResult("t", {"A": {"psnr": math.inf}, "B": {"psnr": 30.0}}, averaging=AVERAGE_OVER_FRAMES,
                        frames={"A": 1, "B": 3})
    assert result.mean("psnr") == math.inf

