"""Restoring a user's own footage: image folders (natural sort) and video files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data.video_folder import VideoFileReader, VideoFolderDataset
from tests.builders import footage_path, real_frames, write_png


@pytest.fixture(scope="module")
def carphone_frames() -> list[np.ndarray]:
    """All 120 frames of carphone_pristine.mp4 decoded directly with OpenCV (RGB): OpenCV stays here
    as an independent decoder to check ours (FFmpeg through PyAV) against."""
    cap = cv2.VideoCapture(str(footage_path("carphone_pristine.mp4")))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_image_folder_natural_sort_and_windows(tmp_path):
    frames = real_frames("carphone_pristine.mp4", 0, 11)
    for i, frame in enumerate(frames):
        write_png(tmp_path / "clip" / f"frame{i + 1}.png", frame)
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    ds = VideoFolderDataset(tmp_path / "clip", num_frame=5, padding="reflection")
    assert ds.names[:3] == ["frame1", "frame2", "frame3"] and ds.names[-2:] == ["frame10", "frame11"]
    item = ds[10]
    assert item["lq"].shape == (5, 3, 144, 176) and item["key"] == "frame11" and item["clip"] == "clip"
    # reflection at the last frame: frames 8, 9, 10, 9, 8 (0-based)
    for t, j in enumerate([8, 9, 10, 9, 8]):
        np.testing.assert_array_equal(
            (item["lq"][t].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), frames[j]
        )


def test_video_file_frames_match_opencv(carphone_frames):
    ds = VideoFolderDataset(footage_path("carphone_pristine.mp4"), num_frame=3)
    assert len(ds) == 120 and ds.clip == "carphone_pristine"
    for index in (5, 6, 100, 3, 119):  # out of order: decoding restarts when going back
        item = ds[index]
        assert item["key"] == f"{index:08d}"
        got = (item["lq"][1].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, carphone_frames[index])


def test_video_reader_keeps_a_window_cache():
    reader = VideoFileReader(footage_path("carphone_pristine.mp4"), cache=4)
    for i in range(10):
        reader.read(i)
    assert list(reader._cache) == [6, 7, 8, 9]


def test_mixed_frame_sizes_error_names_the_file(tmp_path):
    a, b = real_frames("carphone_pristine.mp4", 0, 2)
    write_png(tmp_path / "f" / "0001.png", a)
    write_png(tmp_path / "f" / "0002.png", a)
    write_png(tmp_path / "f" / "0003.png", b[:128, :160])
    ds = VideoFolderDataset(tmp_path / "f", num_frame=3, padding="replicate")
    ds[0]
    with pytest.raises(
        ValueError, match=r"0003.png: frame size 160x128 differs from the first frame's 176x144"
    ):
        ds[1]


def test_empty_unreadable_and_missing_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: folder holds no images"):
        VideoFolderDataset(tmp_path / "empty")
    (tmp_path / "bad.mp4").write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="bad.mp4"):
        VideoFolderDataset(tmp_path / "bad.mp4")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"0.png: not a readable image"):
        VideoFolderDataset(tmp_path / "img")
    with pytest.raises(FileNotFoundError, match="no such folder or video file"):
        VideoFolderDataset(tmp_path / "missing")


def test_too_short_input_for_the_window(tmp_path):
    write_png(tmp_path / "two" / "a.png", real_frames("carphone_pristine.mp4", 0, 1)[0])
    with pytest.raises(ValueError, match="too short"):
        VideoFolderDataset(tmp_path / "two", num_frame=5)
