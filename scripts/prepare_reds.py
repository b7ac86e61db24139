"""REDS archives (extracted) -> the one layout every tool here reads (flat):

    ROOT/train_sharp/<000..269>/<00000000..00000099>.png          GT (clips 240-269: the official val)
    ROOT/train_sharp_bicubic/X4/<000..269>/<...>.png              LR
    ROOT/meta_info/meta_info_REDS_GT.txt, meta_info_REDS4_test_GT.txt, meta_info_REDS_official_val_GT.txt

    python scripts/prepare_reds.py datasets/REDS [--dry-run]

ROOT may hold the archives extracted flat (ROOT/train_sharp, ROOT/val_sharp, ...), as the zips
extract them (ROOT/train/train_sharp, ROOT/val/val_sharp, ROOT/train/train_sharp_bicubic/X4,
...), or a mix, for the kinds sharp, blur, blur_comp, sharp_bicubic/X4 and blur_bicubic/X4:

1. ROOT/train/train_<kind> is renamed to ROOT/train_<kind> (clip by clip when that exists);
2. validation clips 000-029 of ROOT/val_<kind> and ROOT/val/val_<kind> are renamed to
   ROOT/train_<kind>/240-269 (the convention of every EDVR result);
3. clip lists (lines ``000 100 (720,1280,3)``) are written to ROOT/meta_info/: every clip of
   train_sharp, REDS4 (000, 011, 015, 020) and the official validation clips (240-269).

Before anything moves, every clip of train_sharp (and of train_sharp_bicubic/X4) must hold
frames 00000000.png, 00000001.png, ... without gaps, the LR clip the same frames as the GT clip.
Renames only: nothing is copied, overwritten or deleted (emptied folders stay). Idempotent: a
second run moves nothing; a clip whose destination exists is reported and left where it is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data.clips import format_ranges, missing_ranges  # noqa: E402
from data.reds import OFFICIAL_VAL_CLIPS, REDS4_CLIPS  # noqa: E402
from data.storage import DataError, format_clip_meta, png_header_shape  # noqa: E402
from options.cli import ArgumentParser, run  # noqa: E402

KINDS = ("sharp", "blur", "blur_comp", "sharp_bicubic/X4", "blur_bicubic/X4")
GT_KIND, LR_KIND = "sharp", "sharp_bicubic/X4"
NUM_VAL_CLIPS = 30
VAL_OFFSET = 240


@dataclass(frozen=True)
class Move:
    src: Path
    dst: Path


def clip_folders(folder: Path) -> dict[str, Path]:
    """{clip name: folder} of the clip folders in ``folder`` (none when it does not exist)."""
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir()} if folder.is_dir() else {}


def val_clip_name(clip: Path) -> str:
    """Validation clip 000-029 -> its training name 240-269."""
    if not (clip.name.isdigit() and int(clip.name) < NUM_VAL_CLIPS):
        raise DataError(f"{clip}: unexpected REDS validation clip name (expected 000-029)")
    return f"{int(clip.name) + VAL_OFFSET:03d}"


def plan_kind(root: Path, kind: str) -> tuple[list[Move], list[str], dict[str, Path]]:
    """The renames that gather one kind's clips in ROOT/train_<kind>, notes on clips left in place,
    and {clip: where it is now} of ROOT/train_<kind> once the renames are done."""
    flat, nested = root / f"train_{kind}", root / "train" / f"train_{kind}"
    moves, notes, pending = [], [], []  # pending: (clip folder, its name in ROOT/train_<kind>)
    final = clip_folders(flat)
    if nested.is_dir() and not flat.exists():
        moves.append(Move(nested, flat))
        final.update(clip_folders(nested))
    else:
        pending += [(folder, name) for name, folder in clip_folders(nested).items()]
    for val in (root / f"val_{kind}", root / "val" / f"val_{kind}"):
        pending += [(folder, val_clip_name(folder)) for folder in clip_folders(val).values()]
    for folder, name in pending:
        if name in final:
            notes.append(f"skip {folder}: {flat / name} already exists ({folder} left in place)")
        else:
            moves.append(Move(folder, flat / name))
            final[name] = folder
    return moves, notes, final


def frame_names(folder: Path) -> list[str]:
    """Frame names (PNG stems) of one clip folder, sorted."""
    return sorted(p.stem for p in folder.glob("*.png"))


def check_clip(folder: Path, names: list[str]) -> None:
    """A REDS clip holds 00000000.png, 00000001.png, ... without gaps, else DataError."""
    if names and names == [f"{i:08d}" for i in range(len(names))]:
        return
    numbers = {int(n) for n in names if n.isdigit() and len(n) == 8}
    if not names or len(numbers) != len(names):
        raise DataError(f"{folder}: expected REDS frames 00000000.png, 00000001.png, ...; found "
                        f"{', '.join(names[:3]) or 'no PNG frames'}")
    gaps = missing_ranges([-1, *numbers])  # from frame 0
    raise DataError(f"{folder}: the frame numbering has a gap: no frame numbered {format_ranges(gaps)}; "
                    "re-extract the clip")


def clip_info(gt: dict[str, Path], lr: dict[str, Path]) -> dict[str, tuple[int, tuple[int, int, int]]]:
    """{clip: (frame count, (H, W, C) of its first GT frame)}, once every GT clip and its LR clip pass
    ``check_clip``."""
    info = {}
    for name, folder in sorted(gt.items()):
        names = frame_names(folder)
        check_clip(folder, names)
        if name in lr:
            lr_names = frame_names(lr[name])
            check_clip(lr[name], lr_names)
            if lr_names != names:
                raise DataError(f"clip {name}: the LR clip {lr[name]} has {len(lr_names)} frames, "
                                f"the GT clip {folder} {len(names)}")
        first = folder / f"{names[0]}.png"
        with open(first, "rb") as f:
            info[name] = len(names), png_header_shape(f.read(26), str(first))
    return info


def meta_files(root: Path, info: dict[str, tuple[int, tuple[int, int, int]]]) -> dict[Path, str]:
    """Contents of the three clip-list files."""

    def listing(names) -> str:
        return "".join(format_clip_meta(c, *info[c]) for c in names if c in info)

    folder = root / "meta_info"
    return {
        folder / "meta_info_REDS_GT.txt": listing(sorted(info)),
        folder / "meta_info_REDS4_test_GT.txt": listing(REDS4_CLIPS),
        folder / "meta_info_REDS_official_val_GT.txt": listing(OFFICIAL_VAL_CLIPS),
    }


def prepare_reds(root: Path, dry_run: bool = False) -> list[str]:
    """Apply (or with ``dry_run`` only describe) the steps; returns the lines printed."""
    root = Path(root)
    if not any((root / split / f"{split}_sharp").is_dir() or (root / f"{split}_sharp").is_dir()
               for split in ("train", "val")):
        raise FileNotFoundError(
            f"{root}: neither train_sharp nor val_sharp found (directly or under train/, val/)")
    moves, notes, final = [], [], {}
    for kind in KINDS:
        kind_moves, kind_notes, final[kind] = plan_kind(root, kind)
        moves += kind_moves
        notes += kind_notes
    info = clip_info(final[GT_KIND], final[LR_KIND])  # checked before anything moves
    log = [f"move {m.src} -> {m.dst}" for m in moves] + notes
    missing = [c for c in (*REDS4_CLIPS, *OFFICIAL_VAL_CLIPS) if c not in info]
    if missing:
        log.append(f"warning: partition clips not present (left out of meta info): {' '.join(missing)}")
    files = meta_files(root, info)
    log += [f"write {path} ({text.count(chr(10))} clips)" for path, text in files.items()]
    if not dry_run:
        for move in moves:
            move.dst.parent.mkdir(parents=True, exist_ok=True)
            move.src.rename(move.dst)
        for path, text in files.items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    return log


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path, help="folder holding the extracted REDS archives")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = parser.parse_args(argv)
    for line in prepare_reds(args.root, args.dry_run):
        print(("[dry run] " if args.dry_run else "") + line)


if __name__ == "__main__":
    sys.exit(run(main))
