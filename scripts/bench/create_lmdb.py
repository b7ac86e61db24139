"""Peak memory of create_lmdb as the input grows 4x, against a hold-everything peer.

    python scripts/bench/create_lmdb.py [--frames 200] [--workers 2]

Builds trees of N and 4N real 640x272 frames (bikes.mp4, PNG) in a temp folder and converts each
in a fresh subprocess: ours (``scripts/create_lmdb.py``, streaming batches) and a peer that reads
every image into memory before writing (what BasicSR's multi-process LMDB maker does). Prints
peak RSS of the main process (VmHWM) and of the largest worker process (ru_maxrss), and the 4N/N ratios.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from options import cli  # noqa: E402

from scripts.make_demo_data import ClipSource, read_clip, write_png  # noqa: E402

# Run in a fresh interpreter so ru_maxrss measures this conversion alone.
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from scripts.create_lmdb import collect_tree, create_lmdb, encode_item, _write_batch
import lmdb
mode, src, out, workers = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
items = collect_tree(src)
start = time.perf_counter()
if mode == "ours":
    create_lmdb(items, out, workers=workers, batch_size=64, progress=False)
else:  # peer: every encoded image held in a dict, then one write pass
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(workers) as pool:
        records = pool.starmap(encode_item, [(item, -1) for item in items])
    env = lmdb.open(str(out), map_size=1 << 34)
    _write_batch(env, records)
    env.close()
seconds = time.perf_counter() - start
# VmHWM: this process's own peak (ru_maxrss would include the parent's RSS at fork time).
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps(dict(seconds=seconds, main=hwm, workers=workers)))
"""


def run(mode: str, src: Path, out: Path, workers: int) -> dict:
    code = CHILD.format(repo=str(Path(__file__).resolve().parents[2]))
    result = subprocess.run(
        [sys.executable, "-c", code, mode, str(src), str(out), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=cli.positive_int, default=200, help="N: frames in the small tree (large = 4N)")
    parser.add_argument("--workers", type=cli.non_negative_int, default=2, help="create_lmdb worker processes")
    args = parser.parse_args(argv)
    frames = read_clip(ClipSource("src", "bikes.mp4", 0, 50))
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for n in (args.frames, 4 * args.frames):
            src = Path(tmp) / f"tree{n}"
            for i in range(n):  # clips of 50 frames, each clip a different rotation of the footage
                write_png(
                    src / f"{i // 50:03d}" / f"{i % 50:08d}.png", frames[(i // 50 * 7 + i) % len(frames)]
                )
            size = sum(p.stat().st_size for p in src.rglob("*.png")) / 2**20
            for mode in ("ours", "peer"):
                r = run(mode, src, Path(tmp) / f"{mode}{n}.lmdb", args.workers)
                rows[mode, n] = r
                print(
                    f"{mode:5s} {n:5d} frames {size:7.1f} MiB in  {r['seconds']:6.1f} s  "
                    f"{n / r['seconds']:6.1f} img/s  peak RSS main {r['main'] / 1024:7.1f} MiB  "
                    f"workers {r['workers'] / 1024:7.1f} MiB",
                    flush=True,
                )
        for mode in ("ours", "peer"):
            small, large = rows[mode, args.frames], rows[mode, 4 * args.frames]
            print(
                f"{mode}: peak RSS ratio 4N/N  main {large['main'] / small['main']:.2f}x  "
                f"workers {large['workers'] / small['workers']:.2f}x"
            )


if __name__ == "__main__":
    sys.exit(cli.run(main))
