"""Benchmark the DCNv2 op: native vs torchvision vs reference vs plain F.conv2d, same run.

Prints, for EDVR's training shape (PCD level 1: N=10 frames x C=64 x 64x64, 8 deformable
groups, 3x3, Cout=64) and a REDS inference shape (N=1, C=64, 180x320), per dtype, the median
forward and forward+backward time of each op and of F.conv2d of the same shape and dtype, and
each op's cost in F.conv2d units. The ops are timed round-robin (one call of each per round) so
that load changes on a shared machine hit them alike; the cost ratios are computed per round
(an op against the F.conv2d call next to it) and given as median [min-max] over the rounds.
Still, compare only numbers from one run.

For 16-bit dtypes one more row, ``native via float32``, runs the native kernel the way it ran
16-bit inputs before it computed them natively: inputs converted to float32 and the output
back (the gradients are converted back by autograd).

    python scripts/bench/dcn.py                  # CPU, float32 and bfloat16, torch's thread count
    python scripts/bench/dcn.py --threads 2 --repeats 7 --shapes edvr-train
    python scripts/bench/dcn.py --channels-last  # every tensor channels-last, as inference runs
    python scripts/bench/dcn.py --device cuda --dtypes float16
"""

from __future__ import annotations

import datetime
import os
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
DTYPES = ("float32", "float64", "float16", "bfloat16")
CONV = "F.conv2d"


def make_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: str, channels_last: bool = False,
                seed: int = 0) -> dict:
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
    tensors = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items()}
    if channels_last:
        tensors = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                   for k, v in tensors.items()}
    return tensors


def dcn_fn(backend: str) -> Callable[[dict], torch.Tensor]:
    def run(t: dict) -> torch.Tensor:
        return deform_conv2d(t["x"], t["offset"], t["mask"], t["weight"], t["bias"], 1, 1, 1, backend=backend)

    return run


def native_via_float32(t: dict) -> torch.Tensor:
    """The native kernel on float32 copies of the inputs, the result converted back."""
    as_float = {k: v.float() for k, v in t.items()}
    return dcn_fn("native")(as_float).to(t["x"].dtype)


def conv_fn(t: dict) -> torch.Tensor:
    return F.conv2d(t["x"], t["weight"], t["bias"], 1, 1)


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeats: int, device: str
) -> dict[str, list[float]]:
    """Wall time of each function per round, timed round-robin (one call of each per round,
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
    return times


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


def conv_units(times: dict[str, list[float]], op: str) -> str:
    """The op's time in F.conv2d units, per round: 'median [min-max]'."""
    ratios = [a / b for a, b in zip(times[op], times[CONV])]
    return f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"


def bench_shape(shape_name: str, dtype_name: str, backends: list[str], args) -> None:
    shape = SHAPES[shape_name]
    dtype = getattr(torch, dtype_name)
    inputs = make_inputs(shape, dtype, args.device, args.channels_last)
    ops = {name: dcn_fn(name) for name in backends}
    if dtype in (torch.float16, torch.bfloat16) and "native" in backends:
        ops["native via float32"] = native_via_float32
    ops[CONV] = conv_fn
    pairs = {name: forward_and_backward(op, inputs) for name, op in ops.items()}
    fwd = interleaved_times({name: pair[0] for name, pair in pairs.items()}, args.repeats, args.device)
    both = interleaved_times({name: pair[1] for name, pair in pairs.items()}, args.repeats, args.device)
    n, c, h, w, c_out, groups = shape
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"\n## {shape_name}, {dtype_name}, {layout}: N={n} C={c} {h}x{w} G={groups} 3x3 Cout={c_out}")
    print("| op | fwd ms | fwd+bwd ms | fwd in F.conv2d units | fwd+bwd in F.conv2d units |")
    print("|---|---:|---:|---:|---:|")
    for op in ops:
        print(f"| {op} | {statistics.median(fwd[op]) * 1e3:.1f} | {statistics.median(both[op]) * 1e3:.1f} | "
              f"{conv_units(fwd, op)} | {conv_units(both, op)} |")


def machine_line(device: str) -> str:
    """CPU model and the features the native kernel chooses its paths by (or the GPU's name)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model, flags = platform.processor() or platform.machine(), []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in line.split()]
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} CPUs; {' '.join(flags) or 'no AVX2'})"


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the ops run")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=DTYPES,
                        help="input and weight dtypes, each timed on its own")
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=cli.positive_int, default=5, help="timed rounds per measurement")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES),
                        help="shapes to time")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS),
                        help="DCN implementations to time (plus a plain conv2d as the yardstick)")
    parser.add_argument("--channels-last", action="store_true",
                        help="every 4-D tensor channels-last (as the restoration engine runs)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    for name in args.backends:  # load (and build, first time) outside the timings
        get_backend(name, args.device)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{machine_line(args.device)}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {args.device}, {args.repeats} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"# command: python {' '.join(sys.argv)}")
    for shape_name in args.shapes:
        for dtype_name in args.dtypes:
            # torchvision's CPU kernel has no bfloat16; the reference computes 16-bit inputs in float32
            backends = [b for b in args.backends if not (b == "torchvision" and dtype_name == "bfloat16")]
            bench_shape(shape_name, dtype_name, backends, args)


if __name__ == "__main__":
    sys.exit(cli.run(main))
