"""Folder of frames -> BasicSR-compatible LMDB (``data.mdb`` + ``meta_info.txt``), streaming.

Examples::

    # REDS (any clip-folder tree: <root>/<clip>/<frame>.png -> key "clip/frame")
    python scripts/create_lmdb.py datasets/REDS/train_sharp datasets/REDS/train_sharp_with_val.lmdb
    python scripts/create_lmdb.py datasets/REDS/train_sharp_bicubic/X4 \\
        datasets/REDS/train_sharp_bicubic_with_val.lmdb
    # Vimeo-90K: GT keeps only the centre frame im4, LR keeps all 7 (keys "00001/0001/im4")
    python scripts/create_lmdb.py datasets/vimeo90k/vimeo_septuplet/sequences \\
        datasets/vimeo90k/vimeo90k_train_GT_only4th.lmdb \\
        --septuplet-list datasets/vimeo90k/vimeo_septuplet/sep_trainlist.txt --center-only

Memory stays bounded: images are read/encoded by a worker pool one batch at a time (the next
batch is prepared while the current one is written) and committed per batch. The LMDB is built
at ``<output>.tmp`` and renamed to ``<output>`` only when complete. ``--overwrite`` replaces
an existing LMDB folder, never a folder holding anything else.
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import lmdb
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data.storage import IMAGE_EXTENSIONS, META_INFO_NAME, PNG_SIGNATURE, DataError, format_meta_line  # noqa: E402
from options.cli import ArgumentParser, UsageError, non_negative_int, positive_int, run  # noqa: E402

LMDB_FILES = {"data.mdb", "lock.mdb", META_INFO_NAME}  # all that an LMDB folder made here holds
COPY = -1  # "compression level" meaning: keep the source PNG bytes unchanged


@dataclass(frozen=True)
class Item:
    key: str
    path: str


def collect_tree(root: Path) -> list[Item]:
    """Every image under ``root`` (sorted); key = relative path without extension."""
    items = [
        Item(p.relative_to(root).with_suffix("").as_posix(), str(p))
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    if not items:
        raise FileNotFoundError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return sorted(items, key=lambda item: item.key)


def collect_septuplets(root: Path, list_file: Path, center_only: bool) -> list[Item]:
    """Vimeo-90K items from ``sep_*list.txt`` lines ``00001/0001``: frames im1..im7 (or im4 only)."""
    frames = [4] if center_only else range(1, 8)
    items = []
    for line in list_file.read_text().split():
        items.extend(Item(f"{line}/im{j}", str(root / line / f"im{j}.png")) for j in frames)
    if not items:
        raise DataError(f"{list_file}: no septuplets listed")
    return items


def encode_item(item: Item, level: int) -> tuple[str, bytes, tuple[int, ...]]:
    """(key, PNG bytes, shape as stored) for one item; the image is always decoded to validate it.

    ``level == COPY`` keeps a source PNG's bytes; other inputs (or level >= 0) are re-encoded.
    """
    buf = Path(item.path).read_bytes()
    image = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{item.path} (key {item.key!r}): not a decodable image")
    if image.dtype != np.uint8:
        raise DataError(f"{item.path} (key {item.key!r}): expected 8-bit image, got {image.dtype}")
    if level == COPY and buf.startswith(PNG_SIGNATURE):
        return item.key, buf, image.shape
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, max(level, 0)])
    if not ok:
        raise DataError(f"{item.path} (key {item.key!r}): PNG encoding failed")
    return item.key, encoded.tobytes(), image.shape


def _encode_star(args: tuple[Item, int]) -> tuple[str, bytes, tuple[int, ...]]:
    return encode_item(*args)


def _batches(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def estimate_map_size(items: Sequence[Item], level: int) -> int:
    """Bytes to map: source file sizes x (1.2 when copying PNGs, 3 when re-encoding) + 64 MiB."""
    total = sum(Path(item.path).stat().st_size for item in items)
    factor = 1.2 if level == COPY else 3.0
    return int(total * factor) + (64 << 20)


def _write_batch(env: lmdb.Environment, records: list[tuple[str, bytes, tuple[int, ...]]]) -> None:
    """Write one batch in one transaction, doubling the map size and retrying on MapFullError."""
    while True:
        try:
            with env.begin(write=True) as txn:
                for key, value, _ in records:
                    txn.put(key.encode("ascii"), value)
            return
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)


def check_replaceable(folder: Path) -> None:
    """Refuse (FileExistsError) to delete ``folder`` unless it is an LMDB folder as this tool makes them."""
    others = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else [folder.name]
    others = [name for name in others if name not in LMDB_FILES]
    if others:
        raise FileExistsError(f"{folder} is not an LMDB folder (it holds {', '.join(others[:3])}); "
                              "refusing to replace it: choose another output")


def create_lmdb(
    items: Sequence[Item],
    output: Path,
    *,
    workers: int = 2,
    batch_size: int = 256,
    compress_level: int = COPY,
    overwrite: bool = False,
    map_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Write ``items`` into a BasicSR-layout LMDB at ``output``; returns ``output``.

    Memory holds at most two batches of encoded images. ``map_size`` (bytes) defaults to an
    estimate from file sizes and is doubled whenever LMDB reports the map full.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it")
    if output.exists():
        check_replaceable(output)
    for item in items:
        if not item.key.isascii() or " " in item.key:
            raise DataError(f"key {item.key!r} ({item.path}): LMDB keys must be ASCII without spaces")
    tmp = output.with_name(output.name + ".tmp")
    if tmp.exists():
        check_replaceable(tmp)
        shutil.rmtree(tmp)  # left over from an interrupted run
    tmp.mkdir(parents=True)
    env = lmdb.open(str(tmp), map_size=map_size or estimate_map_size(items, compress_level))
    batches = [[(item, compress_level) for item in batch] for batch in _batches(items, batch_size)]
    bar = tqdm(total=len(items), unit="img", desc=f"LMDB {output.name}", disable=not progress)
    try:
        with open(tmp / META_INFO_NAME, "w", encoding="ascii") as meta, _pool(workers) as pool:
            pending = _submit(pool, batches, 0)
            for index in range(len(batches)):
                records = pending.get() if pool is not None else pending
                pending = _submit(pool, batches, index + 1)  # encode the next batch while writing
                _write_batch(env, records)
                meta.writelines(format_meta_line(key, shape, compress_level) for key, _, shape in records)
                bar.update(len(records))
        env.sync()
    finally:
        env.close()
        bar.close()
    if output.exists():
        shutil.rmtree(output)
    tmp.rename(output)
    return output


class _NoPool:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _pool(workers: int):
    return mp.get_context("spawn").Pool(workers) if workers > 0 else _NoPool()


def _submit(pool, batches: list, index: int):
    if index >= len(batches):
        return None
    if pool is None:
        return [_encode_star(args) for args in batches[index]]
    return pool.map_async(_encode_star, batches[index], chunksize=8)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("input", type=Path, help="root folder of the frames")
    parser.add_argument("output", type=Path, help="LMDB folder to create (e.g. train_sharp.lmdb)")
    parser.add_argument("--septuplet-list", type=Path, help="Vimeo-90K sep_trainlist.txt / sep_testlist.txt")
    parser.add_argument("--center-only", action="store_true", help="Vimeo-90K GT: keep only im4")
    parser.add_argument("--workers", type=non_negative_int, default=2,
                        help="encoding processes (0: in this process)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="images per transaction")
    parser.add_argument("--compress-level", type=int, choices=range(COPY, 10), default=COPY,
                        metavar="{-1..9}", help="PNG level 0-9 to re-encode; -1 keeps the source PNG bytes (smallest LMDB)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output LMDB")
    args = parser.parse_args(argv)
    if args.center_only and args.septuplet_list is None:
        raise UsageError("--center-only needs --septuplet-list")
    if not args.input.is_dir():
        raise FileNotFoundError(f"{args.input}: no such folder")
    if args.septuplet_list is not None:
        items = collect_septuplets(args.input, args.septuplet_list, args.center_only)
    else:
        items = collect_tree(args.input)
    out = create_lmdb(items, args.output, workers=args.workers, batch_size=args.batch_size,
                      compress_level=args.compress_level, overwrite=args.overwrite)
    size = (out / "data.mdb").stat().st_size
    print(f"wrote {len(items)} images to {out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    sys.exit(run(main))
