"""Benchmark the DCNv2 op: native vs torchvision vs reference vs plain F.conv2d, same run.

Prints, for EDVR's training shape (PCD level 1: N=10 frames x C=64 x 64x64, 8 deformable
groups, 3x3, Cout=64) and a REDS inference shape (N=1, C=64, 180x320), the median forward
and forward+backward time of each backend and F.conv2d of the same shape, and the ratios
(torchvision / native, native / conv2d). The ops are timed round-robin (one call of each
per round) so that load changes on a shared machine hit them alike; still, compare only
numbers from one run.

    python scripts/bench/dcn.py                  # CPU, torch's default thread count
    python scripts/bench/dcn.py --threads 2 --repeats 5
    python scripts/bench/dcn.py --device cuda --dtype float16
"""

from __future__ import annotations

import datetime
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from options import cli  # noqa: E402

from ops.dcn import deform_conv2d, get_backend  # noqa: E402

SHAPES = {
    # name: (N, C, H, W, Cout, deformable groups)
    "edvr-train": (10, 64, 64, 64, 64, 8),
    "reds-infer": (1, 64, 180, 320, 64, 8),
}
BACKENDS = ("native", "torchvision", "reference")


def make_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    """x (N, C, H, W), offset (N, 2*G*9, H, W) ~ 2*N(0, 1) px, mask = sigmoid(N(0, 1)), weight, bias."""
    n, c, h, w, c_out, groups = shape
    g = torch.Generator().manual_seed(seed)
    tensors = {
        "x": torch.randn(n, c, h, w, generator=g),
        "offset": torch.randn(n, 2 * groups * 9, h, w, generator=g) * 2,
        "mask": torch.sigmoid(torch.randn(n, groups * 9, h, w, generator=g)),
        "weight": torch.randn(c_out, c, 3, 3, generator=g) / (c * 9) ** 0.5,
        "bias": torch.randn(c_out, generator=g),
    }
    return {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}


def dcn_fn(backend: str) -> Callable[[dict], torch.Tensor]:
    def run(t: dict) -> torch.Tensor:
        return deform_conv2d(t["x"], t["offset"], t["mask"], t["weight"], t["bias"], 1, 1, 1, backend=backend)

    return run


def conv_fn(t: dict) -> torch.Tensor:
    return F.conv2d(t["x"], t["weight"], t["bias"], 1, 1)


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, device: str
) -> dict[str, float]:
    """Median wall time of each function, timed round-robin (one call of each per round,
    after one warm-up call each), so that a change of machine load hits all of them alike."""

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    sync()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def forward_and_backward(op: Callable[[dict], torch.Tensor], inputs: dict) -> tuple[Callable, Callable]:
    """(forward only, forward + backward giving the gradients of every input)."""

    def forward() -> None:
        with torch.no_grad():
            op(inputs)

    leaves = {k: v.detach().requires_grad_(True) for k, v in inputs.items()}

    def both() -> None:
        out = op(leaves)
        out.backward(torch.ones_like(out))
        for v in leaves.values():
            v.grad = None

    return forward, both


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the ops run")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64", "float16", "bfloat16"),
                        help="input and weight dtype")
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=cli.positive_int, default=3, help="timed calls per measurement (median)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), help="shapes to time")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS),
                        help="DCN implementations to time (plus a plain conv2d as the yardstick)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    for name in args.backends:  # load (and build, first time) outside the timings
        get_backend(name)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {args.device}, {args.dtype}, median of {args.repeats}")
    print(f"# command: python {' '.join(sys.argv)}")
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        inputs = make_inputs(shape, dtype, args.device)
        ops = {name: dcn_fn(name) for name in args.backends}
        ops["F.conv2d"] = conv_fn
        pairs = {name: forward_and_backward(op, inputs) for name, op in ops.items()}
        fwd = interleaved_medians({name: pair[0] for name, pair in pairs.items()}, args.repeats, args.device)
        both = interleaved_medians({name: pair[1] for name, pair in pairs.items()}, args.repeats, args.device)
        rows = {name: (fwd[name], both[name]) for name in ops}
        n, c, h, w, c_out, groups = shape
        print(f"\n## {shape_name}: N={n} C={c} {h}x{w} G={groups} 3x3 Cout={c_out}")
        print("| op | fwd ms | fwd+bwd ms | fwd vs native | fwd+bwd vs native |")
        print("|---|---:|---:|---:|---:|")
        native = rows.get("native")
        for op, (fwd, both) in rows.items():
            ratio = (f"{fwd / native[0]:.2f}x", f"{both / native[1]:.2f}x") if native else ("-", "-")
            print(f"| {op} | {fwd * 1e3:.1f} | {both * 1e3:.1f} | {ratio[0]} | {ratio[1]} |")
        if native and "torchvision" in rows:
            tv = rows["torchvision"]
            print(f"native speed-up over torchvision: fwd {tv[0] / native[0]:.1f}x, fwd+bwd {tv[1] / native[1]:.1f}x")
        if native:
            conv = rows["F.conv2d"]
            print(f"native cost in F.conv2d units: fwd {native[0] / conv[0]:.2f}x, fwd+bwd {native[1] / conv[1]:.2f}x")


if __name__ == "__main__":
    sys.exit(cli.run(main))
