"""Does exporting EDVR in two halves pay under ONNX Runtime? One window, both ways, in one run.

    python scripts/bench/onnx_split.py [--size 180x320] [--repeats 3]

The PyTorch engine computes each frame's feature pyramid once and reuses it for the T windows
that share the frame. A single ONNX graph of ``EDVR.forward`` cannot: every window recomputes its
T pyramids. Two graphs could: "features" ((N, C, H, W) -> the pyramid [L1, L2, L3]) run once per
new frame, and "rest" (T pyramids and the centre frame -> output: PCD, fusion, reconstruction)
once per window. This script exports a random-weight EDVR-M both ways (``models.export``'s
dynamic shapes and DeformConv translations) and times, per window in steady state: the whole
graph, against "features" on one new frame plus "rest". Printed: median seconds, and the peak
RSS of each way in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from options import cli  # noqa: E402


def export_both(folder: Path, frames: int = 5) -> None:
    """full.onnx, features.onnx and rest.onnx of a random EDVR-M (seed 0)."""
    import torch
    from torch import nn

    from models.edvr import EDVR
    from models.export import dynamic_shapes, example_input
    from ops.dcn import get_backend
    from ops.dcn.onnx_export import translation_table

    class Features(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, frames):
            return tuple(self.net.extract_features(frames))

    class Rest(nn.Module):
        """EDVR.forward after the pyramid: (B, T, F, h/2^i, w/2^i) per level and the centre frames."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, l1, l2, l3, centre):
            b, t = l1.shape[:2]
            pyramid = [l1.flatten(0, 1), l2.flatten(0, 1), l3.flatten(0, 1)]
            reference = [self.net._centre_for_every_frame(level, b, t) for level in pyramid]
            aligned = self.net.pcd_align(pyramid, reference)
            return self.net._reconstruct(self.net.fusion(aligned.unflatten(0, (b, t))), centre)

    get_backend("native", "cpu")
    torch.manual_seed(0)
    net = EDVR(dcn_backend="native").eval().requires_grad_(False)
    x = example_input(net)
    batch = torch.export.Dim("batch", min=1, max=4096)
    rows, columns = torch.export.Dim("rows", min=2, max=16384), torch.export.Dim("columns", min=2, max=16384)
    with torch.no_grad():
        pyramid = [level.unflatten(0, x.shape[:2]) for level in net.extract_features(x.flatten(0, 1))]
    # L1, L2, L3: 4, 2, 1 times the rows and columns of L3
    level_shapes = [{0: batch, 3: 2 ** (2 - i) * rows, 4: 2 ** (2 - i) * columns} for i in range(3)]
    frame_shape = {0: batch, 2: 4 * rows, 3: 4 * columns}
    jobs = {
        "full": (net, (x,), dynamic_shapes(net)),
        "features": (Features(net), (x[:, 0],), (frame_shape,)),
        "rest": (Rest(net), (*pyramid, x[:, net.center_frame_idx]), (*level_shapes, frame_shape)),
    }
    for name, (module, args, dynamic) in jobs.items():
        program = torch.export.export(module, args, dynamic_shapes=dynamic)
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=19, verbose=False,
                                         custom_translation_table=translation_table())
        onnx_program.save(str(folder / f"{name}.onnx"), external_data=False)


def time_way(folder: Path, way: str, size: tuple[int, int], repeats: int) -> dict:
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = False  # as models.restoration.onnx_network

    def session(name):
        return onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(0)
    lq = rng.random((1, 5, 3, *size), dtype=np.float32)
    if way == "full":
        full = session("full")

        def window():
            full.run(None, {full.get_inputs()[0].name: lq})
    else:
        features, rest = session("features"), session("rest")
        pyramids = [features.run(None, {features.get_inputs()[0].name: lq[:, t]}) for t in range(5)]
        stacked = [np.stack([p[level] for p in pyramids], axis=1) for level in range(3)]
        names = [i.name for i in rest.get_inputs()]

        def window():  # one new frame's pyramid, then the rest on the window's five
            features.run(None, {features.get_inputs()[0].name: lq[:, 4]})
            rest.run(None, dict(zip(names, [*stacked, lq[:, 2]])))
    window()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        window()
        seconds.append(time.perf_counter() - start)
    return {"s_per_window": statistics.median(seconds),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def size_pair(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 180x320, got {text!r}") from None
    if height % 4 or width % 4 or min(height, width) < 8:
        raise argparse.ArgumentTypeError(f"expected multiples of 4 of at least 8, got {text!r}")
    return height, width


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=size_pair, default=(180, 320), help="LR frame size HxW")
    parser.add_argument("--repeats", type=cli.positive_int, default=3, help="timed windows per way")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: FOLDER WAY, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(time_way(Path(args.one[0]), args.one[1], args.size, args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="onnx_split_") as folder:
        export_both(Path(folder))
        print(f"# EDVR-M (random weights), LR {args.size[0]}x{args.size[1]}, ONNX Runtime CPU, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, median of {args.repeats}")
        print("| way | s/window | peak RSS MiB |\n|---|---:|---:|")
        results = {}
        for way, label in [("full", "one graph (EDVR.forward)"), ("split", "features (1 new frame) + rest")]:
            out = subprocess.run([sys.executable, __file__, "--one", folder, way, "--size",
                                  f"{args.size[0]}x{args.size[1]}", "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            results[way] = json.loads(out.stdout.strip().splitlines()[-1])
            result = results[way]
            print(f"| {label} | {result['s_per_window']:.2f} | {result['peak_rss_mib']:.0f} |", flush=True)
        print(f"split / full time: {results['split']['s_per_window'] / results['full']['s_per_window']:.2f}")


if __name__ == "__main__":
    sys.exit(cli.run(main))
