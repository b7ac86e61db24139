"""Evaluation on test sets: pyramid reuse within a clip scores what a plain forward scores."""

from __future__ import annotations

import pytest
import torch

from data.video_test import VideoTestDataset
from models.edvr import EDVR
from models.evaluation import evaluate
from models.restoration import Engine
from options.schema import MetricOptions
from tests.builders import tiny_edvr


def test_evaluation_reuses_each_frame_pyramid_within_a_clip(demo, monkeypatch):
    """evaluate() on a test set computes each frame's pyramid once per clip (the windows carry
    their clip indices) and scores what a plain forward per window scores."""
    dataset = VideoTestDataset(demo / "train_sharp_bicubic" / "X4", demo / "train_sharp",
                               meta_info_file=demo / "meta_info_demo_val_GT.txt", num_frame=5)
    metrics = {"psnr": MetricOptions()}
    net = tiny_edvr()
    calls = []
    extract = net.extract_features
    monkeypatch.setattr(net, "extract_features", lambda frames: calls.append(len(frames)) or extract(frames))
    reused = evaluate(Engine(net), dataset, "demo_val", metrics, torch.device("cpu"), progress=False)
    assert sum(calls) == len(dataset) == 12  # 2 clips of 6 frames: each frame once

    class PlainForward(torch.nn.Module):  # no restore_from_features: one forward per window
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.scale, self.size_multiple, self.num_frame = inner.scale, inner.size_multiple, inner.num_frame

        def forward(self, x):
            return EDVR.forward(self.inner, x)

    plain = evaluate(Engine(PlainForward(tiny_edvr())), dataset, "demo_val", metrics, torch.device("cpu"),
                     progress=False)
    for clip in ("003", "007"):
        assert reused.clips[clip]["psnr"] == pytest.approx(plain.clips[clip]["psnr"], abs=1e-3)
