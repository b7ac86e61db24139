"""Evaluation on test sets: pyramid reuse within a clip scores what a plain forward scores."""

from __future__ import annotations

import logging

import pytest
import torch

from data.video_test import VideoTestDataset
from models.edvr import EDVR
from models.evaluation import EvalResult, evaluate
from models.restoration import Engine
from options.schema import MetricOptions
from tests.builders import tiny_edvr


def test_evaluation_reuses_each_frame_pyramid_within_a_clip(demo, monkeypatch):
    """evaluate() on a test set computes each frame's pyramid once per clip (the windows carry
    their clip indices) and scores what a plain forward per window scores."""
    dataset = VideoTestDataset(demo / "train_sharp_bicubic" / "X4", demo / "train_sharp",
                               clips=["003", "006"], num_frame=5)
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
    for clip in ("003", "006"):
        assert reused.clips[clip]["psnr"] == pytest.approx(plain.clips[clip]["psnr"], abs=1e-3)


def test_tables_record_their_settings_and_another_run_does_not_replace_them(tmp_path, caplog):
    result = EvalResult("demo", clips={"007": {"psnr": 27.5}}, frames={"007": 6})
    first = {"weights": "a.pth (sha256 0123)", "precision": "float32", "protocol": "psnr on RGB, crop 0"}
    markdown = result.save(tmp_path / "demo_EDVR", "EDVR", first)
    assert markdown.startswith("## demo: EDVR\n\n- weights: a.pth (sha256 0123)\n- precision: float32\n")
    assert (tmp_path / "demo_EDVR.md").read_text() == markdown
    result.save(tmp_path / "demo_EDVR", "EDVR", first)  # the same settings: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo_EDVR.csv", "demo_EDVR.md"]
    other = {**first, "weights": "b.pth (sha256 4567)"}
    with caplog.at_level(logging.WARNING, logger="models.evaluation"):
        result.save(tmp_path / "demo_EDVR", "EDVR", other)
    assert (tmp_path / "demo_EDVR.md").read_text() == markdown and "b.pth" in (tmp_path / "demo_EDVR-2.md").read_text()
    assert "demo_EDVR.md was written with other settings and is kept; this table is" in caplog.text
    assert (tmp_path / "demo_EDVR-2.csv").is_file()
