"""EDVR-M restoration speed and peak memory on CPU: ours vs the reference way, in one run.

    python scripts/bench/inference.py [--frames 3] [--configs ...]

Each configuration runs in its own process (so its peak RSS is its own) and restores
``--frames`` frames of a random clip with a random-weight EDVR-M after one warm-up frame.
"ours" is ``restore_sequence`` on a network from ``prepare_for_inference``, with test.py's
allocator settings (the path ``test.py --input`` takes). The peer is what the reference implementations (BasicSR, EDVR)
do: one plain forward per 5-frame window, NCHW, torchvision's DCN kernel. Printed: seconds
per frame, frames/s, peak RSS, and the time ratio to the peer of the same size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = {  # name: (LR height, width, DCN backend, tile, overlap); backend "peer": the reference way
    "180x320 reference way (peer)": (180, 320, "peer", None, 0),
    "180x320 ours": (180, 320, "auto", None, 0),
    "180x320 ours, tiles 128+16": (180, 320, "auto", 128, 16),
    "540x960 ours, tiles 256+16 (4K out)": (540, 960, "auto", 256, 16),
}


def run_one(height: int, width: int, backend: str, tile: int | None, overlap: int, frames: int) -> dict:
    if backend != "peer":  # as test.py: before torch is imported
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    import numpy as np
    import torch

    from models.edvr import EDVR
    from models.inference import Tiling, prepare_for_inference, release_freed_activations, restore_sequence
    from ops.dcn import get_backend

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(frames + 1)]
    cpu = torch.device("cpu")
    if backend == "peer":
        backend = "torchvision"
        net = EDVR(dcn_backend=backend).eval()  # EDVR-M

        def reference_way():
            for center in range(len(clip)):
                window = [min(max(i, 0), len(clip) - 1) for i in range(center - 2, center + 3)]
                lq = torch.from_numpy(np.stack([clip[i] for i in window])).permute(0, 3, 1, 2)[None].float() / 255
                with torch.no_grad():
                    yield (net(lq).clamp(0, 1) * 255).round().byte()

        stream = reference_way()
    else:
        release_freed_activations()  # as test.py
        net = prepare_for_inference(EDVR(dcn_backend=backend), cpu)  # EDVR-M
        stream = restore_sequence(net, clip.__getitem__, len(clip), 5, cpu, tiling=Tiling(tile, overlap))
    next(stream)  # warm-up: first frame (allocations, backend load)
    start = time.perf_counter()
    for _ in stream:
        pass
    seconds = (time.perf_counter() - start) / frames
    return {"s_per_frame": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "backend": get_backend(backend).name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3, help="timed frames per configuration")
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), help="names of CONFIGS to run")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*CONFIGS[args.one], frames=args.frames)))
        return

    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; EDVR-M (random weights), {args.frames} frames each")
    print("| configuration | DCN | s/frame | frames/s | peak RSS MiB | time vs peer |")
    print("|---|---|---:|---:|---:|---:|")
    peers = {}
    for name in args.configs:
        result = subprocess.run([sys.executable, __file__, "--one", name, "--frames", str(args.frames)],
                                capture_output=True, text=True, check=True)
        r = json.loads(result.stdout.strip().splitlines()[-1])
        size = name.split()[0]
        if "peer" in name:
            peers[size] = r["s_per_frame"]
        ratio = f"{r['s_per_frame'] / peers[size]:.2f}x" if size in peers else "n/a"
        print(f"| {name} | {r['backend']} | {r['s_per_frame']:.2f} | {1 / r['s_per_frame']:.3f} | "
              f"{r['peak_rss_mib']:.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
