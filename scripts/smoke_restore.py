"""Smoke run: restore a clip of random frames with a randomly initialised EDVR-M.

Proves that the install works end to end (network, DCN backend, x4 output) and
reports the speed on this machine. It is not a quality result: the weights are
random. (The real main job, training on demo data then evaluating, replaces this
once the training issue lands.)

    python scripts/smoke_restore.py [--frames 5] [--size 64 112] [--backend auto]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from models.edvr import EDVR  # noqa: E402
from ops.dcn import get_backend  # noqa: E402


def reflect(index: int, length: int) -> int:
    """Mirror a frame index into [0, length) at the clip borders (-1 -> 1, length -> length - 2)."""
    if index < 0:
        return -index
    return 2 * (length - 1) - index if index >= length else index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=7, help="clip length (>= 5)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 112), metavar=("H", "W"),
                        help="LR frame size, multiples of 4")
    parser.add_argument("--backend", default=None, help="DCN backend (default: $VIDRESTORE_DCN or auto)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.frames < 5:
        parser.error("--frames must be >= 5 (EDVR-M uses 5-frame windows)")

    torch.manual_seed(0)
    net = EDVR(dcn_backend=args.backend).eval()  # EDVR-M, random weights
    clip = torch.rand(args.frames, 3, *args.size)
    print(f"EDVR-M ({sum(p.numel() for p in net.parameters()):,} parameters), "
          f"DCN backend: {get_backend(args.backend).name}, clip: {args.frames} frames of {args.size[0]}x{args.size[1]}")

    restored = []
    start = time.perf_counter()
    with torch.inference_mode():
        for t in range(args.frames):
            window = [reflect(i, args.frames) for i in range(t - 2, t + 3)]  # 5 frames centred on t
            restored.append(net(clip[window].unsqueeze(0))[0])
    seconds = time.perf_counter() - start
    out = torch.stack(restored)
    if not torch.isfinite(out).all():
        raise RuntimeError("the network produced non-finite values")
    print(f"restored {args.frames} frames -> {tuple(out.shape)} in {seconds:.2f} s "
          f"({seconds / args.frames:.2f} s/frame, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
