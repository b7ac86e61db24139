"""Vimeo-90K septuplets -> clip lists (meta info) and, when missing, MATLAB-bicubic LR frames.

    python scripts/prepare_vimeo90k.py datasets/vimeo90k/vimeo_septuplet \\
        [--lr-root datasets/vimeo90k/vimeo_septuplet_matlabLRx4/sequences] [--workers 2] [--dry-run]

ROOT holds ``sequences/<00001>/<0001>/im1..im7.png``, ``sep_trainlist.txt`` and
``sep_testlist.txt``. Writes ``ROOT/meta_info_Vimeo90K_train_GT.txt`` and
``ROOT/meta_info_Vimeo90K_test_GT.txt`` (lines ``00001/0001 7 (256,448,3)``). Every LR frame
missing under ``--lr-root`` is made with ``data.resize.imresize`` (x1/scale); existing frames are
kept, and each new file is written under a temporary name and renamed, so an interrupted run can
simply be run again.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data.resize import imresize  # noqa: E402
from data.storage import DataError, format_clip_meta, png_header_shape, read_clip_meta  # noqa: E402
from options.cli import ArgumentParser, non_negative_int, positive_int, run  # noqa: E402

LISTS = {"train": "sep_trainlist.txt", "test": "sep_testlist.txt"}


def septuplet_meta(sequences: Path, names: list[str]) -> str:
    """Clip-list text for ``names`` (shape from each septuplet's im1 PNG header)."""
    lines = []
    for name in tqdm(names, desc="meta info", unit="septuplet", leave=False):
        path = sequences / name / "im1.png"
        try:
            with open(path, "rb") as f:
                shape = png_header_shape(f.read(26), str(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: listed septuplet {name} is missing") from None
        lines.append(format_clip_meta(name, 7, shape))
    return "".join(lines)


def make_lr(task: tuple[str, str, int]) -> None:
    """Write the LR version (x1/scale MATLAB bicubic) of one HR PNG atomically."""
    src, dst, scale = task
    hr = cv2.imread(src, cv2.IMREAD_COLOR)
    if hr is None:
        raise DataError(f"{src}: not a readable image")
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise DataError(f"{src}: size {hr.shape[1]}x{hr.shape[0]} is not divisible by scale {scale}")
    lr = imresize(hr, 1 / scale)  # channel order does not matter to a per-channel resize
    ok, encoded = cv2.imencode(".png", lr)
    if not ok:
        raise DataError(f"{src}: PNG encoding of the LR frame failed")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.part"  # not *.png: an interrupted run leaves nothing that looks like a frame
    with open(tmp, "wb") as f:
        f.write(encoded.tobytes())
    os.replace(tmp, dst)


def prepare_vimeo90k(
    root: Path, lr_root: Path | None = None, scale: int = 4, workers: int = 2, dry_run: bool = False
) -> list[str]:
    """Write the meta info files and missing LR frames; returns the lines printed."""
    root = Path(root)
    sequences = root / "sequences"
    if not sequences.is_dir():
        raise FileNotFoundError(f"{sequences}: Vimeo-90K 'sequences' folder not found")
    if not any((root / list_name).is_file() for list_name in LISTS.values()):
        raise FileNotFoundError(
            f"{root}: neither {' nor '.join(LISTS.values())} found (the lists of septuplets)")
    log, names_all = [], []
    for split, list_name in LISTS.items():
        list_path = root / list_name
        if not list_path.is_file():
            log.append(f"warning: {list_path} not found, no {split} meta info")
            continue
        names = [name for name, _ in read_clip_meta(list_path)]
        names_all += names
        out = root / f"meta_info_Vimeo90K_{split}_GT.txt"
        log.append(f"write {out} ({len(names)} septuplets)")
        if not dry_run:
            out.write_text(septuplet_meta(sequences, names))
    if lr_root is not None:
        tasks = [
            (str(sequences / n / f"im{j}.png"), str(Path(lr_root) / n / f"im{j}.png"), scale)
            for n in names_all
            for j in range(1, 8)
        ]
        tasks = [t for t in tasks if not os.path.exists(t[1])]
        log.append(f"make {len(tasks)} LR frames (x1/{scale}) under {lr_root}")
        if not dry_run and tasks:
            with mp.get_context("spawn").Pool(workers) if workers > 0 else _Serial() as pool:
                for _ in tqdm(
                    pool.imap_unordered(make_lr, tasks, chunksize=16), total=len(tasks), desc="LR", unit="img"
                ):
                    pass
    return log


class _Serial:
    def __enter__(self) -> "_Serial":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def imap_unordered(fn, tasks, chunksize: int = 1):
        return map(fn, tasks)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, help="vimeo_septuplet folder (sequences/, sep_*list.txt)")
    parser.add_argument("--lr-root", type=Path,
                        help="LR sequences folder; missing LR frames are generated there")
    parser.add_argument("--scale", type=positive_int, default=4, help="LR frames are 1/scale of the HR size")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="processes making LR frames (0: this one)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = parser.parse_args(argv)
    for line in prepare_vimeo90k(args.root, args.lr_root, args.scale, args.workers, args.dry_run):
        print(("[dry run] " if args.dry_run else "") + line)


if __name__ == "__main__":
    sys.exit(run(main))
