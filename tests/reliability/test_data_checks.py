"""Bad data caught where it enters: a frame of another size anywhere in a window, a gap in a
clip's frame numbering, a video that decodes fewer frames than its container announces."""

from __future__ import annotations

import logging
import random
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.clips import check_no_gaps, fill_gaps, format_ranges, missing_ranges
from data.reds import REDSDataset
from data.resize import imresize
from data.sampling import SeededDataset
from data.storage import DataError
from data.video_folder import VideoFileReader, VideoFolderDataset
from data.video_test import VideoTestDataset, Vimeo90KTestDataset
from data.vimeo90k import Vimeo90KDataset
from scripts.create_lmdb import collect_tree, create_lmdb
from tests.builders import real_frames, write_pair, write_png, write_video

FRAMES = real_frames("carphone_pristine.mp4", 40, 7)  # 144x176, LR 36x44


def bigger(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (frame.shape[1] + 8, frame.shape[0] + 4), interpolation=cv2.INTER_AREA)


def smaller(frame: np.ndarray) -> np.ndarray:
    return frame[:-4, :-8]


def reds_pair(tmp_path: Path, frames: list[np.ndarray] = FRAMES) -> tuple[Path, Path]:
    """GT and LR trees of clip 003 (7 real frames); GT and LR consistent."""
    return write_pair(tmp_path, {"003": frames})


# ---------------------------------------------------------------- numbering helpers
@pytest.mark.parametrize(
    "names, filled, gaps",
    [
        (["00000000", "00000001", "00000004"], ["00000000", "00000001", "00000002", "00000003", "00000004"],
         [(2, 3)]),
        (["frame_0009", "frame_0011"], ["frame_0009", "frame_0010", "frame_0011"], [(10, 10)]),
        (["f9", "f12"], ["f9", "f10", "f11", "f12"], [(10, 11)]),
        (["im1", "im2", "im3"], ["im1", "im2", "im3"], []),
        (["a", "b1", "c2"], ["a", "b1", "c2"], []),  # no shared numbering: taken as they are
        (["x1", "y3"], ["x1", "y3"], []),
        (["f1", "f01"], ["f1", "f01"], []),  # a number twice: no numbering
    ],
)
def test_fill_gaps(names, filled, gaps):
    assert fill_gaps(names) == (filled, gaps)


def test_gaps_as_ranges_without_enumerating_them():
    assert missing_ranges([9, 3, 4, 5, 2, 0]) == [(1, 1), (6, 8)]
    assert format_ranges([(3, 5), (9, 9)]) == "3-5, 9"
    assert format_ranges([(n, n) for n in range(1, 40, 2)]).endswith(", 15, ... (20 missing)")
    with pytest.raises(DataError, match=r"no frame numbered 2-1699999998 \(frames shot_1 \.\.\. shot_1699999999\)"):
        check_no_gaps(["shot_1", "shot_1699999999"], "timestamps")  # instantly: nothing is enumerated


# ---------------------------------------------------------------- frame sizes, every frame of a window
@pytest.mark.parametrize("resize", [bigger, smaller], ids=["bigger", "smaller"])
@pytest.mark.parametrize("backend", ["disk", "lmdb"])
def test_reds_neighbour_of_another_size_names_store_and_key(tmp_path, resize, backend):
    gt, lq = reds_pair(tmp_path)
    bad = lq / "003" / "00000005.png"
    write_png(bad, resize(cv2.cvtColor(cv2.imread(str(bad)), cv2.COLOR_BGR2RGB)))
    if backend == "lmdb":
        gt = create_lmdb(collect_tree(gt), tmp_path / "gt.lmdb", workers=0, progress=False)
        lq = create_lmdb(collect_tree(lq), tmp_path / "lq.lmdb", workers=0, progress=False)
    ds = REDSDataset(gt, lq, val_partition=None, num_frame=5, gt_size=32, use_hflip=False, use_rot=False)
    assert ds[2]["key"] == "003/00000002"  # window 0-4
    with pytest.raises(DataError, match=r"key '003/00000005'.*frame is (52x40|36x32) but the clip's first "
                                        r"frame 003/00000000 is 44x36") as info:
        ds[3]  # window 1-5
    assert str(lq) in str(info.value)


def test_reds_gt_frame_of_another_size(tmp_path):
    gt, lq = reds_pair(tmp_path)
    write_png(gt / "003" / "00000003.png", bigger(FRAMES[3]))
    ds = REDSDataset(gt, lq, val_partition=None, num_frame=3, gt_size=32)
    with pytest.raises(DataError, match=r"gt.*key '003/00000003' \(.*00000003.png\): frame is 184x148"):
        ds[3]


def test_vimeo90k_training_and_test_check_every_frame(tmp_path):
    root = tmp_path / "sequences"
    lr_root = tmp_path / "lr"
    for j, frame in enumerate(FRAMES):
        write_png(root / "00001" / "0001" / f"im{j + 1}.png", frame)
        write_png(lr_root / "00001" / "0001" / f"im{j + 1}.png", imresize(frame, 0.25))
    write_png(lr_root / "00001" / "0001" / "im6.png", smaller(imresize(FRAMES[5], 0.25)))
    (tmp_path / "list.txt").write_text("00001/0001\n")
    train = Vimeo90KDataset(root, lr_root, tmp_path / "list.txt", num_frame=7, gt_size=32)
    with pytest.raises(DataError, match=r"key '00001/0001/im6' \(.*im6.png\): frame is 36x32 but the clip's first"):
        train[0]
    test = Vimeo90KTestDataset(lr_root, tmp_path / "list.txt", dataroot_gt=root)
    with pytest.raises(DataError, match=r"key '00001/0001/im6'.*frame is 36x32"):
        test[0]
    assert Vimeo90KTestDataset(lr_root, tmp_path / "list.txt", num_frame=3, dataroot_gt=root)[0]["gt"].shape == (
        3, 144, 176)  # im3..im5: one size
    write_png(root / "00001" / "0001" / "im4.png", bigger(FRAMES[3]))
    with pytest.raises(DataError, match=r"key '00001/0001/im4'.*GT frame is 184x148 but LR frame 44x36"):
        Vimeo90KTestDataset(lr_root, tmp_path / "list.txt", num_frame=3, dataroot_gt=root)[0]
    train = Vimeo90KDataset(root, lr_root, tmp_path / "list.txt", num_frame=3, gt_size=32)
    with pytest.raises(DataError, match=r"key '00001/0001/im4' \(.*im4.png\): GT frame is 184x148 but LR frame 44x36"):
        train[0]


def test_video_test_dataset_checks_lr_and_gt_of_every_frame(tmp_path):
    gt, lq = reds_pair(tmp_path)
    write_png(lq / "003" / "00000005.png", bigger(imresize(FRAMES[5], 0.25)))
    ds = VideoTestDataset(lq, gt, num_frame=3)
    ds[2]
    with pytest.raises(DataError, match=r"lq.*key '003/00000005'.*00000005.png\): frame is 52x40"):
        ds[4]  # window 3, 4, 5
    write_png(lq / "003" / "00000005.png", imresize(FRAMES[5], 0.25))
    write_png(gt / "003" / "00000001.png", smaller(FRAMES[1]))
    with pytest.raises(DataError, match=r"gt.*key '003/00000001'.*frame is 168x140"):
        ds[1]


def test_video_folder_mixed_sizes_is_a_data_error(tmp_path):
    for i, frame in enumerate(FRAMES[:3]):
        write_png(tmp_path / "f" / f"{i:04d}.png", frame if i != 2 else bigger(frame))
    ds = VideoFolderDataset(tmp_path / "f", num_frame=1)
    with pytest.raises(DataError, match=r"0002.png: frame size 184x148 differs from the first frame's 176x144"):
        ds[2]


# ---------------------------------------------------------------- gaps in the frame numbering
def drop_frame(root: Path, key: str) -> None:
    (root / f"{key}.png").unlink()


def test_evaluation_refuses_a_clip_with_a_gap(tmp_path):
    gt, lq = reds_pair(tmp_path)
    drop_frame(lq, "003/00000003")
    drop_frame(lq, "003/00000004")
    with pytest.raises(DataError, match=r"lq\): clip '003': the frame numbering has a gap: no frame numbered 3-4 "
                                        r"\(frames 00000000 \.\.\. 00000006\)"):
        VideoTestDataset(lq, gt, num_frame=3)


def test_reds_training_gap_fails_the_windows_that_need_it_or_skips_them(tmp_path, caplog):
    frames = real_frames("carphone_pristine.mp4", 40, 12)
    gt, lq = write_pair(tmp_path, {"003": frames})
    for root in (gt, lq):
        drop_frame(root, "003/00000006")
    with caplog.at_level(logging.WARNING, logger="data.reds"):
        ds = REDSDataset(gt, lq, val_partition=None, num_frame=3, gt_size=32)
    assert "clip '003' has no frame numbered 6" in caplog.text
    assert ds.clips["003"][6] == "00000006" and len(ds) == 12  # positions follow the numbering
    random.seed(0)
    assert ds[2]["key"] == "003/00000002"  # window 1, 2, 3: no gap
    assert ds[8]["key"] == "003/00000008"  # window 7, 8, 9: after the gap, not bridged
    for index in (5, 6, 7):
        with pytest.raises(DataError, match=r"clip '003': the window around frame 0000000\d needs frames 00000006, "
                                            r"missing from the clip"):
            ds[index]
    # datasets.train.skip_bad_frames: true -> SeededDataset(skip_bad_samples=True) skips, logging why
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="data.sampling"):
        item = SeededDataset(ds, skip_bad_samples=True)[(5, 1)]
    assert item["key"] == "003/00000008"
    assert caplog.text.count("skipping bad training sample") == 3 and "needs frames 00000006" in caplog.text
    with pytest.raises(DataError, match="needs frames 00000006"):
        SeededDataset(ds)[(5, 1)]


def test_video_folder_gap_names_the_missing_numbers(tmp_path):
    for i, frame in enumerate(FRAMES):
        if i not in (2, 3, 5):
            write_png(tmp_path / "f" / f"frame_{i + 1:04d}.png", frame)
    with pytest.raises(DataError, match=r"f: the frame numbering has a gap: no frame numbered 3-4, 6 "
                                        r"\(frames frame_0001 \.\.\. frame_0007\).*--allow-gaps"):
        VideoFolderDataset(tmp_path / "f", num_frame=3)
    ds = VideoFolderDataset(tmp_path / "f", num_frame=3, allow_gaps=True)
    assert ds.names == ["frame_0001", "frame_0002", "frame_0005", "frame_0007"]
    for name in ("a", "b", "c"):  # no shared numbering: natural order, nothing to check
        write_png(tmp_path / "g" / f"{name}.png", FRAMES[0])
    assert VideoFolderDataset(tmp_path / "g", num_frame=3).names == ["a", "b", "c"]


# ---------------------------------------------------------------- videos shorter than announced
def test_truncated_video_warns_with_both_counts(tmp_path, caplog):
    frames = real_frames("carphone_pristine.mp4", 0, 12)
    video = write_video(tmp_path / "clip.avi", frames, encoder="ffv1", time_base=Fraction(1, 12))  # AVI: counted
    with caplog.at_level(logging.WARNING, logger="data.video_file"):
        whole = VideoFileReader(video)
    assert (whole.num_frames, whole.announced_frames) == (12, 12) and not caplog.records
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="data.video_file"):
        cut = VideoFolderDataset(tmp_path / "cut.avi", num_frame=3)
    assert 0 < len(cut) < 12
    assert f"cut.avi: the container announces 12 frames but only {len(cut)} decode" in caplog.text
