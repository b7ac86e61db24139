"""test.py --input: restoring a folder of frames or a video file from the command line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import test as test_script
from data.video_file import probe_video
from models.checkpoint import CheckpointError, save_network
from models.edvr import edvr_config_from_state_dict
from models.outputs import OutputError
from models.restoration.engine import choose_precision
from options.cli import UsageError
from tests.builders import TINY_EDVR, real_frames, tiny_edvr, write_clip_tree, write_video


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "net.pth"
    save_network(path, tiny_edvr(), network={"type": "EDVR", **TINY_EDVR})
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A folder of 6 real 144x176 frames (named as a user's frames often are)."""
    frames = real_frames("carphone_pristine.mp4", 40, 6)
    root = tmp_path_factory.mktemp("clip") / "frames"
    write_clip_tree(root.parent, {"frames": frames}, names="frame_{:d}")
    return root, frames


def restore(*args) -> dict:
    return test_script.main([str(a) for a in args])


def test_folder_to_frames_with_compare_and_gt_metrics(weights, clip, tmp_path, capsys):
    folder, frames = clip
    gt = tmp_path / "gt"
    write_clip_tree(tmp_path, {"gt": [cv2.resize(f, (704, 576)) for f in frames]}, names="frame_{:d}")
    out = tmp_path / "out"
    summary = restore("--model", weights, "--input", folder, "--output", out, "--compare", "0,5", "--gt", gt,
                      "--tile", "32", "--tile-overlap", "16", "--batch", "2")
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == sorted(f"frame_{i}.png" for i in range(6))
    assert cv2.imread(str(out / "frame_0.png")).shape == (576, 704, 3)
    assert sorted(p.name for p in (out / "compare").iterdir()) == ["frame_0.png", "frame_5.png"]
    assert cv2.imread(str(out / "compare" / "frame_0.png")).shape == (576, 3 * 704, 3)  # bicubic | EDVR | GT
    assert summary["frames"] == 6 and summary["psnr"] is not None and summary["bicubic_psnr"] is not None
    printed = capsys.readouterr().out
    assert "| frames | PSNR | SSIM | bicubic PSNR | bicubic SSIM |" in printed
    assert "restored 6 frames of 176x144 -> 704x576" in printed
    assert (out / "metrics.md").is_file() and not (tmp_path / "out.partial").exists()


def test_video_file_to_video_without_options(weights, clip, tmp_path):
    _, frames = clip
    video = write_video(tmp_path / "in.mp4", frames, rate=12)
    out_video = tmp_path / "restored.mp4"
    restore("--model", weights, "--input", video, "--video", out_video, "--scene-cuts", "auto")
    info = probe_video(out_video)
    assert (info.num_frames, info.width, info.height, info.codec, info.pix_fmt) == (6, 704, 576, "h264", "yuv420p")
    source = probe_video(video)  # 12 frames/s in milliseconds: 0, 0.083, 0.167, ...
    assert [info.seconds(k) for k in range(6)] == [source.seconds(k) for k in range(6)]
    assert source.seconds(5) == pytest.approx(5 / 12, abs=0.001)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_architecture_is_read_off_basicsr_weights(clip, tmp_path):
    net = tiny_edvr(num_frame=3, with_tsa=False)
    torch.save({"params": net.state_dict()}, tmp_path / "basicsr.pth")  # no metadata, as BasicSR files
    assert edvr_config_from_state_dict(net.state_dict())["num_frame"] == 3
    restore("--model", tmp_path / "basicsr.pth", "--input", clip[0], "--output", tmp_path / "out")
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_precision_is_chosen_logged_and_aliased(weights, clip, tmp_path, capsys):
    """--precision auto (the default) logs its choice and why; --bf16 is --precision bf16; float16 on the
    CPU is refused with a hint."""
    folder, _ = clip
    restore("--model", weights, "--input", folder, "--output", tmp_path / "auto")
    expected = choose_precision("auto", torch.device("cpu"))
    assert f"precision: {expected.name} ({expected.reason})" in capsys.readouterr().out
    restore("--model", weights, "--input", folder, "--output", tmp_path / "bf16", "--bf16")
    assert "precision: bf16 (asked for)" in capsys.readouterr().out
    restore("--model", weights, "--input", folder, "--output", tmp_path / "fp32", "--precision", "fp32")
    assert "precision: fp32 (asked for)" in capsys.readouterr().out
    bf16, fp32 = ([cv2.imread(str(p)) for p in sorted((tmp_path / name).glob("*.png"))]
                  for name in ("bf16", "fp32"))
    assert len(fp32) == len(bf16) == 6
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(fp32, bf16)) < 2  # 8-bit levels
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="needs a CUDA GPU.*use --precision auto or bf16 on CPU"):
            restore("--model", weights, "--input", folder, "--output", tmp_path / "fp16", "--precision", "fp16")
    with pytest.raises(SystemExit):  # argparse: one precision flag at most
        restore("--model", weights, "--input", folder, "--output", tmp_path / "x", "--bf16", "--precision", "fp32")


def test_bad_inputs(weights, clip, tmp_path):
    folder, frames = clip
    with pytest.raises(FileNotFoundError, match="no such folder or video file"):
        restore("--model", weights, "--input", tmp_path / "missing", "--output", tmp_path / "o1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no images"):
        restore("--model", weights, "--input", tmp_path / "empty", "--output", tmp_path / "o2")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="broken.mp4: not a video file FFmpeg can read"):
        restore("--model", weights, "--input", tmp_path / "broken.mp4", "--output", tmp_path / "o3")
    mixed = tmp_path / "mixed"
    write_clip_tree(tmp_path, {"mixed": frames[:5] + [frames[5][:100]]})
    with pytest.raises(ValueError, match="mixed frame sizes"):
        restore("--model", weights, "--input", mixed, "--output", tmp_path / "o4")
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o4.partial").exists()  # nothing half-written
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="not empty and was not written by vidrestore"):
        restore("--model", weights, "--input", folder, "--output", busy)
    with pytest.raises(UsageError, match="unsupported video container"):
        restore("--model", weights, "--input", folder, "--video", tmp_path / "out.xyz")
    options = tmp_path / "other.yml"
    options.write_text("name: x\nnetwork: {type: EDVR, num_feat: 16, deformable_groups: 2, num_extract_block: 1, "
                       "num_reconstruct_block: 1}\n")
    with pytest.raises(CheckpointError, match=r"(?s)shape mismatch \(\d+\): conv_first.weight"):
        restore("--model", weights, "--opt", options, "--input", folder, "--output", tmp_path / "o5")
    with pytest.raises(UsageError, match="give --output DIR"):
        restore("--model", weights, "--input", folder)  # neither --output nor --video


def test_video_input_with_ground_truth_in_its_own_frame_order(weights, clip, tmp_path, capsys):
    small = [np.ascontiguousarray(f[:32, :48]) for f in clip[1]]
    video = write_video(tmp_path / "in.mkv", small, encoder="ffv1")
    gt = [cv2.resize(f, (192, 128), interpolation=cv2.INTER_CUBIC) for f in small]
    write_clip_tree(tmp_path, {"gt": gt}, names="shot_{:d}")  # not the input's names: matched in order
    summary = restore("--model", weights, "--input", video, "--output", tmp_path / "out", "--gt", tmp_path / "gt",
                      "--compare", "2", "--precision", "fp32")
    assert summary["psnr"] is not None and summary["frames"] == 6
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png"))[0] == "00000000.png"
    table = (tmp_path / "out" / "metrics.md").read_text()
    assert "- weights: net.pth (sha256 " in table and "- precision: float32" in table and "no border crop" in table
    assert cv2.imread(str(tmp_path / "out" / "compare" / "00000002.png")).shape == (128, 3 * 192, 3)
    assert "| 6 |" in capsys.readouterr().out
