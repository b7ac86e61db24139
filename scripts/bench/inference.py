"""EDVR-M restoration speed and peak memory: ours vs the reference way, in one run.

    python scripts/bench/inference.py [--frames 3] [--rounds 2] [--configs ...] [--device cpu|cuda]

Each configuration runs in its own process (so its peak memory is its own) and restores
``--frames`` frames of a random clip with a random-weight EDVR-M after one warm-up frame;
``--rounds`` repeats the list of configurations in order (round-robin).
"ours" is the restoration stream (``models.restoration``: ``Engine`` on a network from
``prepare_for_inference``, ``WindowSchedule``, ``RestorationStream``) with test.py's allocator
settings: the path ``test.py --input`` takes, in the precision it picks by default
(``--precision auto``: bfloat16 on CPUs with AVX512-BF16/AMX and GPUs that support it) or a named
one. The peer is what the reference implementations (BasicSR, EDVR) do: one plain forward per
5-frame window, NCHW, float32, torchvision's DCN kernel. Printed: seconds per frame, peak memory
(RSS; on CUDA also the peak allocated GPU memory) and the speed-up over the peer of the same size
and device in the same round, as median [min-max] over the rounds. "ONNX Runtime" is the same
stream on the network exported by ``scripts/export.py`` (exported in a child process first, so the
export's memory is not counted), as ``test.py --model edvr.onnx`` runs it; each ONNX Runtime row
is also compared with the float32 "ours" row of the same tiling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from options import cli  # noqa: E402


@dataclass(frozen=True)
class Config:
    height: int  # LR frame size
    width: int
    peer: bool = False  # the reference way instead of ours
    tile: int | None = None
    overlap: int = 0
    precision: str = "fp32"  # ours: "auto", "fp32", "bf16" or "fp16" (see choose_precision)
    onnx: bool = False  # the ONNX export run by ONNX Runtime instead of the PyTorch network


CONFIGS = {
    "cpu": {
        "180x320 reference way (peer)": Config(180, 320, peer=True),
        "180x320 ours auto": Config(180, 320, precision="auto"),
        "180x320 ours fp32": Config(180, 320),
        "180x320 ours auto, tiles 128+16": Config(180, 320, precision="auto", tile=128, overlap=16),
        "540x960 ours auto, tiles 256+16 (4K out)": Config(540, 960, precision="auto", tile=256, overlap=16),
        "180x320 ours fp32, tiles 128+16": Config(180, 320, tile=128, overlap=16),
        "180x320 ONNX Runtime": Config(180, 320, onnx=True),
        "180x320 ONNX Runtime, tiles 128+16": Config(180, 320, tile=128, overlap=16, onnx=True),
    },
    "cuda": {
        "180x320 reference way (peer)": Config(180, 320, peer=True),
        "180x320 ours fp32": Config(180, 320),
        "180x320 ours fp16": Config(180, 320, precision="fp16"),
        "180x320 ours bf16": Config(180, 320, precision="bf16"),
        "540x960 reference way (peer)": Config(540, 960, peer=True),
        "540x960 ours fp16 (4K out)": Config(540, 960, precision="fp16"),
    },
}


def run_one(config: Config, device_name: str, frames: int) -> dict:
    if not config.peer:  # as test.py: before torch is imported
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    import numpy as np
    import torch

    from models.edvr import EDVR
    from models.restoration import (Engine, RestorationStream, Tiling, WindowSchedule, prepare_for_inference,
                                    release_freed_activations)
    from models.restoration.engine import choose_precision
    from ops.dcn import get_backend

    torch.manual_seed(0)
    device = torch.device(device_name)
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (config.height, config.width, 3), dtype=np.uint8) for _ in range(frames + 1)]
    if config.peer:
        backend = "torchvision"
        net = EDVR(dcn_backend=backend).eval().to(device)  # EDVR-M
        for pack in net.dcn_packs:  # the reference implementations compute no offset statistics
            pack.track_offsets = False

        def reference_way():
            for center in range(len(clip)):
                window = [min(max(i, 0), len(clip) - 1) for i in range(center - 2, center + 3)]
                lq = torch.from_numpy(np.stack([clip[i] for i in window])).permute(0, 3, 1, 2)[None]
                with torch.no_grad():
                    out = net(lq.to(device).float() / 255)
                    yield (out.clamp(0, 1) * 255).round().byte().cpu()

        stream = reference_way()
    else:
        backend = "auto"
        release_freed_activations()  # as test.py
        if config.onnx:
            from models.restoration.engine import Precision
            from models.restoration.onnx_network import OnnxNetwork

            net = OnnxNetwork(export_random_edvr_m())
            device = net.device
            precision = Precision("fp32", "ONNX Runtime")
        else:
            net = prepare_for_inference(EDVR(dcn_backend=backend), device)  # EDVR-M
            precision = choose_precision(config.precision, device)
        engine = Engine(net, precision=precision.dtype, tiling=Tiling(config.tile, config.overlap))
        stream = iter(RestorationStream(clip.__getitem__, len(clip), WindowSchedule(net.num_frame), engine, device))
    next(stream)  # warm-up: first frame (allocations, backend load, cuDNN autotuning)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in stream:  # every frame comes back to the host, so the clock includes the GPU work
        pass
    seconds = (time.perf_counter() - start) / frames
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    dcn = "onnxruntime" if config.onnx else get_backend(backend, device).name
    return {"s_per_frame": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mib": gpu, "backend": dcn,
            "precision": "fp32" if config.peer else f"{precision.name} ({precision.reason})"}


def export_random_edvr_m() -> bytes:
    """A random-weight EDVR-M (seed 0, as "ours") exported by scripts/export.py in a child process."""
    import tempfile

    import torch

    from models.edvr import EDVR

    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as folder:
        weights, model = Path(folder) / "edvr_m.pth", Path(folder) / "edvr_m.onnx"
        torch.manual_seed(0)
        torch.save({"params": EDVR().state_dict()}, weights)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "export.py"), "--model", str(weights),
                        "--out", str(model)], check=True, capture_output=True)
        return model.read_bytes()


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=cli.positive_int, default=3, help="timed frames per configuration")
    parser.add_argument("--device", choices=sorted(CONFIGS), default="cpu", help="where the network runs")
    parser.add_argument("--configs", nargs="*", help="names of the device's configurations (default: all)")
    parser.add_argument("--rounds", type=cli.positive_int, default=1,
                        help="rounds over the configurations (each round runs every one once, in order)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args(argv)
    configs = CONFIGS[args.device]
    if args.one:
        print(json.dumps(run_one(configs[args.one], args.device, frames=args.frames)))
        return
    names = args.configs or list(configs)
    unknown = [name for name in names if name not in configs]
    if unknown:
        parser.error(f"unknown --configs {unknown}; for --device {args.device}: {list(configs)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA GPU here")
        where = torch.cuda.get_device_name()
    else:
        where = f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"

    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {platform.machine()}, {where}; "
          f"EDVR-M (random weights), {args.frames} frames each")
    print(f"# rounds: {args.rounds}; per configuration: median [min-max] over the rounds; speed-up = the "
          f"peer's s/frame in the same round / the configuration's")
    results: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.rounds):  # round-robin: a change of machine load hits every configuration alike
        for name in names:
            result = subprocess.run([sys.executable, __file__, "--one", name, "--frames", str(args.frames),
                                     "--device", args.device], capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
            results[name].append(json.loads(result.stdout.strip().splitlines()[-1]))
    print("| configuration | DCN | precision | s/frame | peak RSS MiB | peak GPU MiB | speed-up vs peer |")
    print("|---|---|---|---:|---:|---:|---:|")
    peers = {name.split()[0]: results[name] for name in names if configs[name].peer}
    for name, runs in results.items():
        peer = peers.get(name.split()[0])
        speedups = [p["s_per_frame"] / r["s_per_frame"] for p, r in zip(peer, runs)] if peer else []
        gpu = [r["peak_gpu_mib"] for r in runs if r["peak_gpu_mib"] is not None]
        seconds, rss = [r["s_per_frame"] for r in runs], [r["peak_rss_mib"] for r in runs]
        print(f"| {name} | {runs[0]['backend']} | {runs[0]['precision']} | {spread(seconds)} | "
              f"{spread(rss, '.0f')} | {spread(gpu, '.0f') if gpu else '-'} | "
              f"{spread(speedups) + 'x' if speedups else 'n/a'} |", flush=True)
    for name, runs in results.items():  # each ONNX Runtime row against our float32 PyTorch row, same tiling
        ours = name.replace("ONNX Runtime", "ours fp32")
        if configs[name].onnx and ours in results:
            times = [r["s_per_frame"] / o["s_per_frame"] for r, o in zip(runs, results[ours])]
            rss = [r["peak_rss_mib"] / o["peak_rss_mib"] for r, o in zip(runs, results[ours])]
            print(f"{name} vs {ours}: time {spread(times)}x, peak RSS {spread(rss)}x")


def spread(values: list[float], fmt: str = ".2f") -> str:
    """'median [min-max]' of ``values`` (just the value for one)."""
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:{fmt}}"
    return f"{median:{fmt}} [{min(values):{fmt}}-{max(values):{fmt}}]"

if __name__ == "__main__":
    sys.exit(cli.run(main))
