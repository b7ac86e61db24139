"""Encoding restored frames with FFmpeg (PyAV): each codec this wheel has, closed segments joined
without re-encoding, timestamps kept, audio copied packet for packet, settings checked."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from data.video_file import Colour, probe_video
from metrics import psnr
from models.outputs import OutputError
from models.restoration.encoding import (
    CODECS,
    SegmentWriter,
    VideoEncoding,
    check_encoding,
    copyable_streams,
    join_segments,
    output_colour,
)
from tests.builders import real_frames, write_video

PTS = [0, 40, 80, 200, 210, 220, 400]  # milliseconds: a variable frame rate
AVAILABLE = [codec for codec, encoder in CODECS.items() if encoder in av.codecs_available]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [np.ascontiguousarray(f[:64, :96]) for f in real_frames("carphone_pristine.mp4", 40, len(PTS))]


def encode(folder, frames, encoding: VideoEncoding, suffix: str, copy_from=None, segment_frames: int = 3):
    """``frames`` at ``PTS`` into segments of ``segment_frames``, joined into ``folder/out<suffix>``."""
    fmt = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}[suffix]
    colour, segments = output_colour(Colour(), 96, 64), []
    for first in range(0, len(frames), segment_frames):
        segments.append(folder / f"{first}{suffix}")
        writer = SegmentWriter(segments[-1], fmt, encoding, (96, 64), Fraction(1, 1000), colour)
        for k in range(first, min(first + segment_frames, len(frames))):
            writer.write(frames[k], PTS[k], (PTS[k + 1] if k + 1 < len(PTS) else PTS[k] + 40) - PTS[k])
        writer.close()
    streams = copyable_streams(copy_from, fmt)[0] if copy_from is not None else []
    join_segments(segments, folder / f"out{suffix}", fmt, copy_from, streams)
    return folder / f"out{suffix}"


@pytest.mark.parametrize("codec", AVAILABLE)
def test_each_codec_of_this_wheel_round_trips_frames_and_timestamps(frames, tmp_path, codec):
    lossless = codec == "ffv1"
    encoding = check_encoding(codec, None, None, "yuv444p" if codec != "av1" else "yuv420p", ".mkv")
    video = encode(tmp_path, frames, encoding, ".mkv")
    info = probe_video(video)
    assert info.num_frames == len(PTS) and [info.seconds(k) for k in range(len(PTS))] == pytest.approx(
        [p / 1000 for p in PTS])
    with av.open(str(video)) as container:
        assert container.streams.video[0].codec_context.codec.canonical_name == av.codec.Codec(
            CODECS[codec], "w").canonical_name
    assert info.pix_fmt == encoding.pix_fmt
    with av.open(str(video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    worst = min(psnr(a, b) for a, b in zip(decoded, frames, strict=True))
    assert worst > (45 if lossless else 30)


def test_ten_bit_output(frames, tmp_path):
    encoding = check_encoding("h264", 18, "veryfast", "yuv420p10le", ".mp4")
    assert probe_video(encode(tmp_path, frames, encoding, ".mp4")).pix_fmt == "yuv420p10le"


@pytest.mark.parametrize("suffix,audio_encoder", [(".mp4", "aac"), (".mkv", "libopus"), (".mov", "aac")])
def test_audio_packets_are_copied_unchanged(frames, tmp_path, suffix, audio_encoder):
    source = write_video(tmp_path / f"in{suffix}", frames, pts=PTS, audio_seconds=0.5, audio_encoder=audio_encoder)
    video = encode(tmp_path, frames, VideoEncoding(preset="veryfast"), suffix, copy_from=source)

    def audio(path):
        with av.open(str(path)) as container:
            return [(bytes(p), p.pts) for p in container.demux(audio=0) if p.size]

    assert len(audio(source)) > 10 and audio(video) == audio(source)
    assert probe_video(video).num_frames == len(PTS)


def test_segments_are_reproducible(frames, tmp_path):
    """--resume re-encodes the open segment from its kept frames: the bits must not change."""
    encoding = VideoEncoding(preset="medium")
    packets = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        with av.open(str(encode(tmp_path / run, frames, encoding, ".mp4"))) as container:
            packets.append([bytes(p) for p in container.demux(video=0) if p.size])
    assert packets[0] == packets[1]


@pytest.mark.parametrize("args,message", [
    (("vp8", None, None, "yuv420p", ".mp4"), "--codec vp8: unknown codec"),
    (("h264", 52, None, "yuv420p", ".mp4"), "--crf 52: out of range for h264 (0-51"),
    (("av1", 64, None, "yuv420p", ".mkv"), "--crf 64: out of range for av1 (0-63"),
    (("ffv1", 18, None, "yuv420p", ".mkv"), "--crf: ffv1 is lossless"),
    (("h264", None, "turbo", "yuv420p", ".mp4"), "--preset turbo: not a preset of h264"),
    (("av1", None, None, "yuv444p", ".mkv"), "--pix-fmt yuv444p: libsvtav1 cannot encode it"),
    (("ffv1", None, None, "yuv420p", ".mov"), "--codec ffv1: a .mov file cannot hold ffv1"),
    (("h264", None, None, "yuv420p", ".avi"), "unsupported video container '.avi'"),
])
def test_settings_that_cannot_work_are_refused_with_the_choices(args, message):
    with pytest.raises(OutputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_encoding(*args)
