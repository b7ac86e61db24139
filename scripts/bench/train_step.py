"""One EDVR-M woTSA training step (Adam, Charbonnier sum, 5x64x64 LR), per DCN backend.

    python scripts/bench/train_step.py [--steps 3] [--backends native torchvision]
    python scripts/bench/train_step.py --device cuda --batch 16 --amp bf16

The step is the one train.py runs (``Trainer.train_step``: forward with batched PCD, loss,
backward, Adam). Backends are timed round-robin in one run; printed: median seconds per step
and the ratio to the torchvision backend (the kernel the reference implementations use).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from options import cli  # noqa: E402

from models.edvr import EDVR  # noqa: E402
from models.trainer import Trainer  # noqa: E402
from options.parse import Validator  # noqa: E402
from options.schema import TrainOptions  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=cli.positive_int, default=3, help="timed steps per backend (after one warm-up)")
    parser.add_argument("--backends", nargs="+", default=["native", "torchvision"],
                        choices=["native", "torchvision", "reference"], help="DCN backends to time")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the step runs")
    parser.add_argument("--batch", type=cli.positive_int, default=2, help="samples per step")
    parser.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="train.amp of the step")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise cli.UsageError("--device cuda: no CUDA GPU here")
    device = torch.device(args.device)
    recipe = Validator("bench").parse(TrainOptions, {"total_iter": 1000, "scheduler": {"type": "constant"},
                                                     "pixel_loss": {"reduction": "sum"}, "amp": args.amp}, "train")
    generator = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(args.batch, 5, 3, 64, 64, generator=generator).to(device),
             "gt": torch.rand(args.batch, 3, 256, 256, generator=generator).to(device)}
    trainers = {}
    for backend in args.backends:
        torch.manual_seed(0)
        trainers[backend] = Trainer(EDVR(with_tsa=False, dcn_backend=backend).to(device), recipe, device)
        trainers[backend].train_step(batch, 1)  # warm-up (and the native build, if needed)
    times = {backend: [] for backend in args.backends}
    for step in range(args.steps):
        for backend, trainer in trainers.items():
            synchronize(device)
            start = time.perf_counter()
            trainer.train_step(batch, step + 2)
            synchronize(device)
            times[backend].append(time.perf_counter() - start)
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {where}, torch {torch.__version__}; EDVR-M woTSA, "
          f"batch {args.batch}, 5x64x64 LR, amp {args.amp}, median of {args.steps}")
    print("| DCN backend | s/step | vs torchvision |\n|---|---:|---:|")
    reference = statistics.median(times["torchvision"]) if "torchvision" in times else None
    for backend, values in times.items():
        median = statistics.median(values)
        ratio = f"{reference / median:.2f}x faster" if reference else "n/a"
        print(f"| {backend} | {median:.2f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(cli.run(main))
