"""Encoding restored frames into a video file with FFmpeg's libraries (PyAV), in closed pieces.

The video is encoded in segments of a fixed number of frames, each a complete file of the
output's container that starts with a key frame (``SegmentWriter``); ``join_segments`` then
copies their packets, without re-encoding, into the final file together with the input's
audio and subtitle packets (copied unchanged). Segment boundaries depend on frame indices only,
so a run continued from its closed segments writes the same packets as one never interrupted.

Every frame keeps its input timestamp (``FrameTiming``: variable frame rate survives) in the
input's time base (Matroska stores milliseconds: its timestamps are rounded to those).
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from data.storage import TEMPORARY_SUFFIX
from data.video_file import MATRIX_BT709, MATRIX_SMPTE170M, RANGE_LIMITED, Colour, swscale_matrix
from models.outputs import OutputError

logger = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}  # file suffix -> FFmpeg muxer
CODECS = {"h264": "libx264", "h265": "libx265", "av1": "libsvtav1", "ffv1": "ffv1"}  # --codec -> encoder
PIXEL_FORMATS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
CRF_RANGES = {"h264": (0, 51), "h265": (0, 51), "av1": (0, 63)}  # ffv1 is lossless: no CRF
_X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                 "placebo")
PRESETS = {"h264": _X26X_PRESETS, "h265": _X26X_PRESETS, "av1": tuple(str(i) for i in range(14)), "ffv1": ()}
DEFAULT_PRESETS = {"h264": "medium", "h265": "medium", "av1": "8"}
DEFAULT_CRF = 18
ENCODER_THREADS = {"h264": 4}  # fixed, not per machine: see SegmentWriter


@dataclass(frozen=True)
class VideoEncoding:
    """How restored frames are encoded: ``codec`` (a key of ``CODECS``), ``crf`` (quality: lower
    is better; None for lossless ffv1), ``preset`` (speed; None: the codec's default), ``pix_fmt``."""

    codec: str = "h264"
    crf: int | None = DEFAULT_CRF
    preset: str | None = None
    pix_fmt: str = "yuv420p"

    @property
    def encoder(self) -> str:
        return CODECS[self.codec]

    def settings(self) -> dict:
        """What a continued run must share (see ``models.restoration.resume``)."""
        return asdict(self)

    def describe(self) -> str:
        """E.g. "h264 (libx264) crf 18 preset medium yuv420p"."""
        quality = f" crf {self.crf}" if self.crf is not None else " lossless"
        preset = f" preset {self.preset}" if self.preset else ""
        return f"{self.codec} ({self.encoder}){quality}{preset} {self.pix_fmt}"

    def options(self) -> dict[str, str]:
        """The encoder's private options."""
        options = {}
        if self.crf is not None:
            options["crf"] = str(self.crf)
        if self.preset is not None:
            options["preset"] = self.preset
        if self.codec == "h265":
            options["x265-params"] = "log-level=error"
        if self.codec == "ffv1":
            options.update(level="3", slicecrc="1")  # level 3: sliced, multi-threaded; checksums per slice
        return options


def check_encoding(codec: str, crf: int | None, preset: str | None, pix_fmt: str, suffix: str) -> VideoEncoding:
    """The ``VideoEncoding`` of these command-line values, checked against the codec, the
    container (``suffix``) and the encoders this FFmpeg build has; OutputError naming the
    value and the choices otherwise. ``crf`` None: the default for lossy codecs."""
    fmt = CONTAINERS.get(suffix.lower())
    if fmt is None:
        raise OutputError(f"--video: unsupported video container {suffix!r} (use {', '.join(CONTAINERS)})")
    if codec not in CODECS:
        raise OutputError(f"--codec {codec}: unknown codec (use {', '.join(CODECS)})")
    encoder = CODECS[codec]
    try:
        formats = {f.name for f in av.codec.Codec(encoder, "w").video_formats or ()}
    except av.codec.codec.UnknownCodecError:
        raise OutputError(f"--codec {codec}: this FFmpeg build (PyAV {av.__version__}) has no {encoder} encoder",
                          hint="choose another --codec") from None
    if codec == "ffv1":
        if crf is not None:
            raise OutputError("--crf: ffv1 is lossless and has no quality setting; leave --crf out")
        if preset is not None:
            raise OutputError("--preset: ffv1 has no presets; leave --preset out")
    else:
        low, high = CRF_RANGES[codec]
        crf = DEFAULT_CRF if crf is None else crf
        if not low <= crf <= high:
            raise OutputError(f"--crf {crf}: out of range for {codec} ({low}-{high}; lower is better, 18 is "
                              "visually lossless for h264)")
        preset = preset or DEFAULT_PRESETS[codec]
        if preset not in PRESETS[codec]:
            raise OutputError(f"--preset {preset}: not a preset of {codec} (use {', '.join(PRESETS[codec])})")
    if pix_fmt not in PIXEL_FORMATS or pix_fmt not in formats:
        usable = [f for f in PIXEL_FORMATS if f in formats]
        raise OutputError(f"--pix-fmt {pix_fmt}: {encoder} cannot encode it (use {', '.join(usable)})")
    if codec_name_of(encoder) not in supported_codecs(fmt):
        holders = [s for s, f in CONTAINERS.items() if codec_name_of(encoder) in supported_codecs(f)]
        raise OutputError(f"--codec {codec}: a {suffix} file cannot hold {codec}",
                          hint=f"write {' or '.join(holders)} instead")
    return VideoEncoding(codec, crf, preset, pix_fmt)


def codec_name_of(encoder: str) -> str:
    """The codec an encoder writes, e.g. libx264 -> h264."""
    return av.codec.Codec(encoder, "w").canonical_name


def supported_codecs(fmt: str) -> set[str]:
    """Codec names the FFmpeg muxer ``fmt`` can store."""
    with av.open(os.devnull, "w", format=fmt) as probe:
        return set(probe.supported_codecs)


def output_colour(source: Colour, width: int, height: int) -> Colour:
    """The colour description of the encoded output: the input's tags where it has them; an
    untagged matrix becomes the one players assume for the output size (BT.709 from 720 lines),
    an untagged range limited. The tags are written, so players need not guess."""
    matrix = source.matrix if swscale_matrix(source.matrix) else (
        MATRIX_BT709 if height >= 720 or width >= 1280 else MATRIX_SMPTE170M)
    return Colour(matrix, source.range or RANGE_LIMITED, source.primaries, source.transfer)


@dataclass(frozen=True)
class FrameTiming:
    """Presentation timestamps and durations of the frames, in ``time_base`` units."""

    pts: list[int]
    durations: list[int]
    time_base: Fraction

    @classmethod
    def constant(cls, count: int, fps: float) -> FrameTiming:
        """``count`` frames at ``fps`` frames per second."""
        rate = Fraction(fps).limit_denominator(1001)
        return cls(list(range(count)), [1] * count, 1 / rate)

    def settings(self) -> dict:
        """A short record for the resume check (rate and first/last timestamps)."""
        return {"time_base": str(self.time_base), "frames": len(self.pts), "first_pts": self.pts[0],
                "last_pts": self.pts[-1]}


class SegmentWriter:
    """Frames encoded into one closed segment file: written under a temporary name beside
    ``path`` and renamed to ``path`` by ``close()`` once complete and on disk; ``abandon()``
    drops it."""

    def __init__(self, path: Path, fmt: str, encoding: VideoEncoding, size: tuple[int, int], time_base: Fraction,
                 colour: Colour, sample_aspect_ratio: Fraction | None = None):
        """``size``: (width, height) of the frames."""
        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
        self.colour = colour
        self.pix_fmt = encoding.pix_fmt
        self._container = av.open(str(self.tmp), "w", format=fmt)
        stream = self._container.add_stream(encoding.encoder, options=encoding.options())
        stream.width, stream.height = size
        stream.pix_fmt = encoding.pix_fmt
        stream.time_base = time_base
        context = stream.codec_context
        context.time_base = time_base
        context.colorspace, context.color_range = colour.matrix, colour.range
        context.color_primaries, context.color_trc = colour.primaries, colour.transfer
        if sample_aspect_ratio is not None:
            context.sample_aspect_ratio = sample_aspect_ratio
        if encoding.codec in ENCODER_THREADS:
            # x264 picks its thread count from the machine's cores, and its bits depend on it (not on
            # timing: 30 encodes at a fixed count were identical); a fixed count makes the segment that
            # --resume re-encodes identical on another machine too.
            context.thread_count = ENCODER_THREADS[encoding.codec]
        self._stream, self.time_base = stream, time_base

    def write(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        """One HxWx3 uint8 RGB frame with its timestamp and duration (``time_base`` units)."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format=self.pix_fmt, dst_colorspace=swscale_matrix(self.colour.matrix), dst_color_range=self.colour.range)
        frame.pts, frame.duration, frame.time_base = pts, duration, self.time_base
        frame.colorspace, frame.color_range = self.colour.matrix, self.colour.range
        self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder, close the file, put it on disk and rename it to ``path``."""
        self._container.mux(self._stream.encode(None))
        self._container.close()
        with open(self.tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        try:
            self._container.close()
        except av.FFmpegError:
            pass
        self.tmp.unlink(missing_ok=True)


def copyable_streams(source: Path, fmt: str) -> tuple[list[int], list[str]]:
    """(indices of ``source``'s audio and subtitle streams a ``fmt`` file can hold, descriptions
    of the other streams that are left out: data, attachments, extra video, cover pictures).
    An audio or subtitle stream the container cannot hold is an OutputError."""
    supported = supported_codecs(fmt)
    keep, left_out = [], []
    with av.open(str(source)) as container:
        main = next((s.index for s in container.streams.video
                     if not s.disposition & av.stream.Disposition.attached_pic), None)
        for stream in container.streams:
            name = stream.codec_context.name if stream.codec_context else str(stream.codec_tag)
            what = f"{stream.type} {name} (stream {stream.index})"
            if stream.index == main:
                continue
            if stream.type not in ("audio", "subtitle"):
                left_out.append(what)
            elif name not in supported:
                raise OutputError(f"--video: the input's {what} cannot be stored in a {fmt} file without "
                                  "re-encoding it", hint="use .mkv (holds almost any codec), or --no-audio to drop "
                                                         "the audio and subtitles")
            else:
                keep.append(stream.index)
    return keep, left_out


def _decode_times(packets_pts: list[int]) -> list[int]:
    """Decoding timestamps for packets in decoding order with these presentation timestamps:
    the sorted timestamps delayed by the stream's reordering depth (as x264 writes them), so the
    segments' packets form one stream whose decoding times increase."""
    ordered = sorted(packets_pts)
    rank = {pts: i for i, pts in enumerate(ordered)}
    delay = max([0] + [k - rank[pts] for k, pts in enumerate(packets_pts)])
    if delay == 0:
        return list(packets_pts)
    offset = ordered[min(delay, len(ordered) - 1)] - ordered[0]
    return [ordered[k] - offset if k < delay else ordered[k - delay] for k in range(len(ordered))]


def _video_packets(segments: list[Path]) -> Iterator[av.Packet]:
    """The segments' video packets in order, with decoding times for the joined stream."""
    pts = []
    for segment in segments:
        with av.open(str(segment)) as container:
            pts.extend(p.pts for p in container.demux(video=0) if p.size)
    if len(set(pts)) != len(pts):
        raise OutputError(f"{segments[0].parent}: the segments repeat timestamps (written by different runs?)")
    dts = iter(_decode_times(pts))
    for segment in segments:
        with av.open(str(segment)) as container:
            for packet in container.demux(video=0):
                if packet.size:
                    packet.dts = next(dts)
                    yield packet


def _copied_packets(source: Path, indices: list[int]) -> Iterator[av.Packet]:
    with av.open(str(source)) as container:
        streams = [container.streams[i] for i in indices]
        for packet in container.demux(streams):
            if packet.size and (packet.dts is not None or packet.pts is not None):
                yield packet


def _time(packet: av.Packet) -> Fraction:
    """When a packet is due, in seconds (decoding time, else presentation time)."""
    stamp = packet.dts if packet.dts is not None else packet.pts
    return stamp * packet.time_base


_GENERATED_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands", "handler_name", "vendor_id",
                   "duration"}


def _copy_tags(source: dict, target: dict) -> None:
    for key, value in source.items():
        if key.lower() not in _GENERATED_TAGS and not key.startswith("_STATISTICS"):
            target[key] = value


def join_segments(segments: list[Path], output: Path, fmt: str, copy_from: Path | None = None,
                  copy_streams: list[int] = ()) -> None:
    """Write ``output`` (a new file) from the segments' video packets and the packets of
    ``copy_from``'s streams ``copy_streams`` (audio, subtitles), unchanged and interleaved by
    time, with ``copy_from``'s container tags, chapters and those streams' language and title.
    The result is fsynced; ``output`` is not renamed here."""
    if not segments:
        raise OutputError(f"{output}: no segments to join")
    with av.open(str(segments[0])) as first, av.open(str(output), "w", format=fmt) as out:
        template = first.streams.video[0]
        video = out.add_stream_from_template(template, opaque=True)
        video.time_base = template.time_base
        copied, source = {}, None
        try:
            if copy_from is not None:
                source = av.open(str(copy_from))
                _copy_tags(source.metadata, out.metadata)
                main = source.streams.video[0] if source.streams.video else None
                if main is not None:
                    _copy_tags({k: v for k, v in main.metadata.items() if k in ("language", "title")}, video.metadata)
                for index in copy_streams:
                    original = source.streams[index]
                    stream = out.add_stream_from_template(original, opaque=True)
                    stream.time_base = original.time_base
                    _copy_tags({k: v for k, v in original.metadata.items() if k in ("language", "title")},
                               stream.metadata)
                    stream.disposition = original.disposition
                    copied[index] = stream
                chapters = source.chapters()
                if chapters:
                    out.set_chapters(chapters)
            streams = [_video_packets(segments)]
            if copied:
                streams.append(_copied_packets(copy_from, list(copied)))
            for packet in heapq.merge(*streams, key=_time):
                packet.stream = video if packet.stream.type == "video" else copied[packet.stream.index]
                out.mux(packet)
        finally:
            if source is not None:
                source.close()
    with open(output, "rb") as handle:
        os.fsync(handle.fileno())
