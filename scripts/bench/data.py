"""Training-data throughput: REDSDataset from disk vs LMDB, 0 and 2 DataLoader workers, on the
demo data; compared with the time of one EDVR-M training step (CPU) at the same batch size.

    python scripts/make_demo_data.py --lmdb        # once
    python scripts/bench/data.py [--root datasets/demo] [--batch-size 8] [--gt-size 64]
        [--batches 30] [--repeats 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from options import cli  # noqa: E402

from data.reds import REDSDataset  # noqa: E402


def samples_per_second(dataset: REDSDataset, batch_size: int, workers: int, batches: int) -> float:
    """Samples/s over ``batches`` batches, after one warm-up batch (worker start-up excluded)."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0
    )
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def edvr_m_step_seconds(batch_size: int, gt_size: int, steps: int = 3) -> float:
    """Seconds per forward+backward+Adam step of EDVR-M (64 features, 5 frames) on CPU."""
    from models.edvr import EDVR

    model = EDVR(num_feat=64, num_frame=5, num_extract_block=5, num_reconstruct_block=10)
    optim = torch.optim.Adam(model.parameters(), 1e-4)
    lq = torch.rand(batch_size, 5, 3, gt_size // 4, gt_size // 4)
    gt = torch.rand(batch_size, 3, gt_size, gt_size)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = (model(lq) - gt).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("datasets/demo"),
                        help="demo dataset with LMDB copies (make_demo_data.py --lmdb)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=8, help="samples per batch")
    parser.add_argument("--gt-size", type=cli.positive_int, default=64, help="GT crop size (a multiple of 4)")
    parser.add_argument("--batches", type=cli.positive_int, default=30, help="batches timed per configuration")
    parser.add_argument("--repeats", type=cli.positive_int, default=3, help="interleaved repeats (best kept)")
    args = parser.parse_args(argv)
    if not (args.root / "train_sharp.lmdb").is_dir():
        raise cli.UsageError(f"{args.root}: no demo LMDB", hint=f"run: python scripts/make_demo_data.py --lmdb --out {args.root}")
    roots = {
        "disk": ("train_sharp", "train_sharp_bicubic/X4"),
        "lmdb": ("train_sharp.lmdb", "train_sharp_bicubic_X4.lmdb"),
    }
    print(
        f"REDSDataset on {args.root}: num_frame 5, gt_size {args.gt_size}, batch {args.batch_size}, "
        f"interval_list [1, 2], random_reverse, flips; {args.batches} batches after warm-up"
    )
    datasets = {
        backend: REDSDataset(
            args.root / gt,
            args.root / lq,
            meta_info_file=args.root / "meta_info_demo_train_GT.txt",
            val_partition=None,
            num_frame=5,
            gt_size=args.gt_size,
            interval_list=[1, 2],
            random_reverse=True,
            dataset_enlarge_ratio=100,
        )
        for backend, (gt, lq) in roots.items()
    }
    # Interleaved repeats, best of each: the shared machine's load varies from second to second.
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeats):
        for backend, dataset in datasets.items():
            for workers in (0, 2):
                rate = samples_per_second(dataset, args.batch_size, workers, args.batches)
                best[backend, workers] = max(best.get((backend, workers), 0.0), rate)
    print(f"{'backend':8s} {'workers':>7s} {'samples/s':>10s} {'s/batch':>8s}   (best of {args.repeats})")
    for (backend, workers), rate in best.items():
        print(f"{backend:8s} {workers:7d} {rate:10.1f} {args.batch_size / rate:8.3f}")
    step = edvr_m_step_seconds(args.batch_size, args.gt_size)
    print(
        f"EDVR-M training step (CPU, batch {args.batch_size}, gt {args.gt_size}): {step:.3f} s "
        f"= {args.batch_size / step:.1f} samples/s"
    )


if __name__ == "__main__":
    sys.exit(cli.run(main))
