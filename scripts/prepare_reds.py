"""REDS archives (extracted) -> the canonical layout used by every EDVR result.

    python scripts/prepare_reds.py datasets/REDS [--dry-run]

Expects the folders of the official archives under ROOT (directly, or under ROOT/train and
ROOT/val as the zips extract): ``train_sharp``, ``val_sharp``, ``train_sharp_bicubic/X4``,
``val_sharp_bicubic/X4`` (and optionally ``*_blur``, ``*_blur_comp``, ``*_blur_bicubic/X4``).

1. Validation clips 000-029 of every ``val_<kind>`` folder are moved to ``train_<kind>`` as
   clips 240-269 (a rename, no copy).
2. Clip lists (``000 100 (720,1280,3)``) are written to ROOT/meta_info/:
   ``meta_info_REDS_GT.txt`` (every clip of train_sharp), ``meta_info_REDS4_test_GT.txt``
   (000, 011, 015, 020), ``meta_info_REDS_official_val_GT.txt`` (240-269).

Idempotent: clips already moved are skipped; if a clip exists both as val 0NN and train 2NN,
the val copy is left in place and reported (never overwritten or deleted).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data.reds import OFFICIAL_VAL_CLIPS, REDS4_CLIPS  # noqa: E402
from data.storage import format_clip_meta, png_header_shape  # noqa: E402

KINDS = ("sharp", "blur", "blur_comp", "sharp_bicubic/X4", "blur_bicubic/X4")
NUM_VAL_CLIPS = 30
VAL_OFFSET = 240


def find_folder(root: Path, split: str, kind: str) -> Path | None:
    """``ROOT/<split>_<kind>`` or ``ROOT/<split>/<split>_<kind>``, whichever exists."""
    for candidate in (root / f"{split}_{kind}", root / split / f"{split}_{kind}"):
        if candidate.is_dir():
            return candidate
    return None


def train_counterpart(root: Path, val: Path) -> Path:
    """Where ``train_<kind>`` goes when absent: val/val_sharp -> train/train_sharp, val_x/X4 -> train_x/X4."""
    rel = val.relative_to(root).as_posix()
    return root / rel.replace("val_", "train_").replace("val/", "train/")


@dataclass(frozen=True)
class Move:
    src: Path
    dst: Path


def plan_moves(root: Path) -> tuple[list[Move], list[str]]:
    """Renames still to do, and notes on clips skipped (already moved / present twice)."""
    moves, notes = [], []
    for kind in KINDS:
        val = find_folder(root, "val", kind)
        if val is None:
            continue
        train = find_folder(root, "train", kind) or train_counterpart(root, val)
        for clip in sorted(p for p in val.iterdir() if p.is_dir()):
            if not (clip.name.isdigit() and int(clip.name) < NUM_VAL_CLIPS):
                raise ValueError(f"{clip}: unexpected REDS validation clip name (expected 000-029)")
            dst = train / f"{int(clip.name) + VAL_OFFSET:03d}"
            if dst.exists():
                notes.append(f"skip {clip}: {dst} already exists (val copy left in place)")
            else:
                moves.append(Move(clip, dst))
    return moves, notes


def clip_info(folder: Path) -> tuple[int, tuple[int, int, int]]:
    """(frame count, (H, W, C) of the first frame) of one clip folder of PNGs."""
    frames = sorted(folder.glob("*.png"))
    if not frames:
        raise FileNotFoundError(f"{folder}: clip folder has no PNG frames")
    with open(frames[0], "rb") as f:
        return len(frames), png_header_shape(f.read(26), str(frames[0]))


def meta_files(root: Path, clips: dict[str, int], shapes: dict[str, tuple[int, int, int]]) -> dict[Path, str]:
    """Contents of the three clip-list files, from the clips of train_sharp (after the moves)."""

    def listing(names) -> str:
        return "".join(format_clip_meta(c, clips[c], shapes[c]) for c in names if c in clips)

    folder = root / "meta_info"
    return {
        folder / "meta_info_REDS_GT.txt": listing(sorted(clips)),
        folder / "meta_info_REDS4_test_GT.txt": listing(REDS4_CLIPS),
        folder / "meta_info_REDS_official_val_GT.txt": listing(OFFICIAL_VAL_CLIPS),
    }


def prepare_reds(root: Path, dry_run: bool = False) -> list[str]:
    """Apply (or with ``dry_run`` only describe) the steps; returns the lines printed."""
    root = Path(root)
    if find_folder(root, "train", "sharp") is None and find_folder(root, "val", "sharp") is None:
        raise FileNotFoundError(
            f"{root}: neither train_sharp nor val_sharp found (directly or under train/, val/)"
        )
    moves, notes = plan_moves(root)
    log = [f"move {m.src} -> {m.dst}" for m in moves] + notes
    for move in moves:
        if not dry_run:
            move.dst.parent.mkdir(parents=True, exist_ok=True)
            move.src.rename(move.dst)
    # Clip lengths/shapes after the moves: existing train clips plus planned destinations.
    sharp = find_folder(root, "train", "sharp")
    folders = {p.name: p for p in sharp.iterdir() if p.is_dir()} if sharp else {}
    folders.update(
        {m.dst.name: (m.dst if not dry_run else m.src) for m in moves if m.dst.parent.name == "train_sharp"}
    )
    info = {name: clip_info(path) for name, path in sorted(folders.items())}
    lr = find_folder(root, "train", "sharp_bicubic/X4")
    if lr is not None and not dry_run:
        for name, (count, _) in info.items():
            if (lr / name).is_dir() and len(list((lr / name).glob("*.png"))) != count:
                raise ValueError(
                    f"clip {name}: {lr / name} has a different frame count than train_sharp ({count})"
                )
    missing = [c for c in (*REDS4_CLIPS, *OFFICIAL_VAL_CLIPS) if c not in info]
    if missing:
        log.append(f"warning: partition clips not present (left out of meta info): {' '.join(missing)}")
    files = meta_files(root, {k: v[0] for k, v in info.items()}, {k: v[1] for k, v in info.items()})
    for path, text in files.items():
        log.append(f"write {path} ({text.count(chr(10))} clips)")
        if not dry_run:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    return log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="folder holding the extracted REDS archives")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = parser.parse_args(argv)
    for line in prepare_reds(args.root, args.dry_run):
        print(("[dry run] " if args.dry_run else "") + line)


if __name__ == "__main__":
    main()
