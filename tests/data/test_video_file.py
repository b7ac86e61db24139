"""Reading video files through FFmpeg (PyAV): frames, per-frame timestamps, rotation, damage."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
import pytest

from data.storage import DataError
from data.video_file import VideoFileReader, probe_video
from metrics import psnr
from tests.builders import real_frames, write_video

VFR_PTS = [0, 40, 80, 200, 210, 220, 400, 440]  # milliseconds: 25, 100 and 5.6 frames/s in turn


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [np.ascontiguousarray(f[:48, :64]) for f in real_frames("carphone_pristine.mp4", 40, 8)]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_variable_frame_rate_timestamps_and_frames_survive(frames, tmp_path, suffix):
    video = write_video(tmp_path / f"vfr{suffix}", frames, pts=VFR_PTS)
    info = probe_video(video)
    assert info.num_frames == 8 and not info.retimed and (info.width, info.height) == (64, 48)
    assert [info.seconds(k) for k in range(8)] == pytest.approx([p / 1000 for p in VFR_PTS])
    assert info.durations[:-1] == [b - a for a, b in zip(info.pts, info.pts[1:])]
    reader = VideoFileReader(video)
    for k in (0, 5, 7, 2):  # out of order: decoding restarts
        assert psnr(reader.read(k), frames[k]) > 40  # x264 crf 0 4:4:4, converted back to RGB


@pytest.mark.parametrize("degrees,shape,corner", [
    (90, (64, 48, 3), (1, 0)),  # counter-clockwise: the top-left corner goes to the bottom left
    (-90, (64, 48, 3), (0, 1)),  # clockwise: to the top right
    (180, (48, 64, 3), (1, 1)),
])
def test_rotation_metadata_is_applied(tmp_path, degrees, shape, corner):
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:8, :8] = 255  # a white top-left corner
    video = write_video(tmp_path / "turned.mp4", [frame] * 3, rotation=degrees)
    reader = VideoFileReader(video)
    shown = reader.read(0)
    assert shown.shape == shape and reader.shape == shape
    rows, cols = np.nonzero(shown[..., 0] > 128)
    at_bottom, at_right = rows.mean() > shape[0] / 2, cols.mean() > shape[1] / 2
    assert (int(at_bottom), int(at_right)) == corner


def test_truncated_video_keeps_the_frames_before_the_damage(frames, tmp_path, caplog):
    video = write_video(tmp_path / "clip.mkv", frames * 3, encoder="ffv1", pix_fmt="yuv444p")
    data = video.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 2 // 3])
    with caplog.at_level(logging.WARNING, logger="data.video_file"):
        info = probe_video(tmp_path / "cut.mkv")
    assert 0 < info.num_frames < 24
    reader = VideoFileReader(tmp_path / "cut.mkv")
    assert psnr(reader.read(info.num_frames - 1), frames[(info.num_frames - 1) % 8]) > 40


def test_files_without_a_readable_video_stream_are_data_errors(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    with pytest.raises(DataError, match="noise.mp4: not a video file FFmpeg can read"):
        probe_video(tmp_path / "noise.mp4")
    with av.open(str(tmp_path / "sound.m4a"), "w") as container:  # audio only
        stream = container.add_stream("aac", rate=48000)
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        tone.sample_rate, tone.pts, tone.time_base = 48000, 0, Fraction(1, 48000)
        container.mux(stream.encode(tone))
        container.mux(stream.encode(None))
    with pytest.raises(DataError, match=r"sound.m4a: holds no video stream \(audio aac\)"):
        probe_video(tmp_path / "sound.m4a")
    (tmp_path / "empty.mkv").write_bytes(b"")
    with pytest.raises(DataError, match="empty.mkv: not a video file FFmpeg can read"):
        probe_video(tmp_path / "empty.mkv")
