"""One EDVR-M woTSA training step (Adam, Charbonnier sum, 5x64x64 LR) per configuration, vs the reference way.

    python scripts/bench/train_step.py [--steps 3] [--rounds 3] [--configs ...]
    python scripts/bench/train_step.py --device cuda --batch 16 --configs "torchvision bf16" "native bf16"

A configuration is "<DCN backend> <train.amp> [channels-last]", e.g. "native auto channels-last"
(the demo recipe: ``train.amp: auto``, ``train.channels_last: true``). The peer is the first
configuration, by default "torchvision none": what the reference implementations (BasicSR, EDVR)
run, torchvision's DCN in float32, NCHW. The step is the one train.py runs (``Trainer.train_step``:
forward with batched PCD, loss, backward, Adam). Every configuration takes one warm-up step, then
``--rounds`` rounds each time ``--steps`` steps of every configuration in turn (round-robin, so a
change of machine load hits them alike). Printed: seconds per step and the peer's time over the
configuration's in the same round, as median [min-max] over the rounds.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from options import cli  # noqa: E402

from models.edvr import EDVR  # noqa: E402
from models.trainer import Trainer  # noqa: E402
from options.parse import Validator  # noqa: E402
from options.schema import TrainOptions  # noqa: E402

BACKENDS = ("native", "torchvision", "reference")
AMPS = ("none", "auto", "bf16", "fp16")
DEFAULT_CONFIGS = ("torchvision none", "native none", "native none channels-last", "native auto channels-last")


@dataclass(frozen=True)
class StepConfig:
    backend: str  # DCN backend (ops.dcn)
    amp: str  # train.amp
    channels_last: bool  # train.channels_last

    @classmethod
    def parse(cls, text: str) -> StepConfig:
        """``"<backend> <amp> [channels-last]"``, e.g. ``"native bf16 channels-last"``."""
        words = text.split()
        if len(words) not in (2, 3) or words[0] not in BACKENDS or words[1] not in AMPS or (
                len(words) == 3 and words[2] != "channels-last"):
            raise cli.UsageError(f"--configs {text!r}: expected '<backend> <amp> [channels-last]' with backend in "
                                 f"{'/'.join(BACKENDS)} and amp in {'/'.join(AMPS)}")
        return cls(words[0], words[1], len(words) == 3)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def summary(values: list[float], fmt: str) -> str:
    """``median [min-max]`` of ``values``."""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=cli.positive_int, default=3, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=cli.positive_int, default=1, help="rounds over the configurations")
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                        help="'<DCN backend> <train.amp> [channels-last]' each; the first is the peer")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the step runs")
    parser.add_argument("--batch", type=cli.positive_int, default=2, help="samples per step")
    args = parser.parse_args(argv)
    configs = {name: StepConfig.parse(name) for name in args.configs}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise cli.UsageError("--device cuda: no CUDA GPU here")
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    batch = {"lq": torch.rand(args.batch, 5, 3, 64, 64, generator=generator).to(device),
             "gt": torch.rand(args.batch, 3, 256, 256, generator=generator).to(device)}
    trainers = {}
    for name, config in configs.items():
        recipe = Validator("bench").parse(TrainOptions, {
            "total_iter": 1000, "scheduler": {"type": "constant"}, "pixel_loss": {"reduction": "sum"},
            "amp": config.amp, "channels_last": config.channels_last}, "train")
        torch.manual_seed(0)
        trainers[name] = Trainer(EDVR(with_tsa=False, dcn_backend=config.backend).to(device), recipe, device)
        trainers[name].train_step(batch, 1)  # warm-up (and the native build, if needed)
    seconds: dict[str, list[float]] = {name: [] for name in configs}  # per round: median s/step
    step = 1
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            times = []
            for _ in range(args.steps):
                step += 1
                synchronize(device)
                start = time.perf_counter()
                trainer.train_step(batch, step)
                synchronize(device)
                times.append(time.perf_counter() - start)
            seconds[name].append(statistics.median(times))
    peer = args.configs[0]
    where = (torch.cuda.get_device_name() if device.type == "cuda"
             else f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {where}, torch {torch.__version__}; EDVR-M woTSA, "
          f"batch {args.batch}, 5x64x64 LR; {args.rounds} round(s) of {args.steps} step(s) after one warm-up step")
    print(f"# median [min-max] over the rounds; speed-up = {peer!r} s/step / the configuration's, same round")
    print("| configuration | amp runs as | s/step | speed-up vs peer |\n|---|---|---:|---:|")
    for name, values in seconds.items():
        ratios = [p / v for p, v in zip(seconds[peer], values, strict=True)]
        print(f"| {name} | {trainers[name].amp} | {summary(values, '.2f')} | {summary(ratios, '.2f')}x |")


if __name__ == "__main__":
    sys.exit(cli.run(main))
