"""Bad frames during training: an error naming the file by default; with skip_bad_frames, every
skip is logged with its cause and counted, and training goes on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import train as train_script
from scripts.chaos_resume import write_options
from tests.builders import demo_dataset


@pytest.fixture
def damaged_demo(tmp_path_factory, tmp_path) -> tuple[Path, list[Path]]:
    """A copy of the demo clips with one truncated and one zero-byte GT frame."""
    data = tmp_path / "demo"
    shutil.copytree(demo_dataset(tmp_path_factory), data, ignore=shutil.ignore_patterns("*.lmdb"))
    clip = data / "train_sharp" / "000"
    truncated, empty = clip / "00000002.png", clip / "00000003.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    empty.write_bytes(b"")
    return data, [truncated, empty]


def test_bad_frame_stops_training_with_its_name(damaged_demo, tmp_path):
    data, bad = damaged_demo
    opts = write_options(tmp_path / "o.yml", data, tmp_path / "exp", iters=40)
    with pytest.raises(Exception) as info:
        train_script.main(["-opt", str(opts), "--set", "datasets.train.num_worker_per_gpu=0"])
    assert any(path.name in str(info.value) for path in bad) and "000" in str(info.value)


def test_skip_bad_frames_logs_and_counts_every_skip(damaged_demo, tmp_path):
    data, _ = damaged_demo
    opts = write_options(tmp_path / "o.yml", data, tmp_path / "exp", iters=40)
    train_script.main(["-opt", str(opts), "--set", "datasets.train.num_worker_per_gpu=0",
                       "--set", "datasets.train.skip_bad_frames=true"])
    log = (tmp_path / "exp" / "chaos" / "logs" / "train.log").read_text()
    skips = [line for line in log.splitlines() if "skipping bad training sample" in line]
    assert skips and "1 skipped so far" in skips[0] and f"{len(skips)} skipped so far" in skips[-1]
    assert (tmp_path / "exp" / "chaos" / "models" / "net_g_40.pth").is_file()
