"""Reading video files with FFmpeg's libraries (PyAV): any container and codec FFmpeg decodes.

``probe_video(path)`` decodes the file once and describes its video stream (``VideoInfo``): the
frames that decode, each frame's timestamp (variable frame rate kept), the display orientation
(rotation metadata), the colour description and the other streams. ``VideoFileReader`` then
serves frame ``i`` as HxWx3 uint8 RGB, upright as a player shows it.

YUV is converted to RGB with the stream's colour matrix and range; a stream that does not say
which matrix it uses is read as players do: BT.709 from 720 lines up (or 1280 columns), BT.601
below. Errors are ``DataError`` naming the file.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import av
import numpy as np

from data.storage import DataError

logger = logging.getLogger(__name__)

# FFmpeg's AVColorSpace values (colour matrices) and the swscale matrix each is converted with
MATRIX_RGB, MATRIX_BT709, MATRIX_UNSPECIFIED, MATRIX_BT470BG, MATRIX_SMPTE170M = 0, 1, 2, 5, 6
_SWSCALE_MATRIX = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2


@dataclass(frozen=True)
class Colour:
    """A stream's colour description, as FFmpeg's enum values (``AVColorSpace``, ``AVColorRange``,
    ``AVColorPrimaries``, ``AVColorTransferCharacteristic``); 2 (0 for ``range``) = unspecified."""

    matrix: int = MATRIX_UNSPECIFIED
    range: int = RANGE_UNSPECIFIED
    primaries: int = 2
    transfer: int = 2

    def matrix_for(self, width: int, height: int) -> int:
        """The matrix to convert with: the tagged one, else the one players assume for this size."""
        if self.matrix in _SWSCALE_MATRIX or self.matrix == MATRIX_RGB:
            return self.matrix
        return MATRIX_BT709 if height >= 720 or width >= 1280 else MATRIX_SMPTE170M

    def range_for(self, pix_fmt: str) -> int:
        """The range to convert with: the tagged one, else full for ``yuvj`` formats, limited otherwise."""
        if self.range in (RANGE_LIMITED, RANGE_FULL):
            return self.range
        return RANGE_FULL if pix_fmt.startswith("yuvj") else RANGE_LIMITED


def swscale_matrix(matrix: int) -> str | None:
    """The swscale name of an FFmpeg colour matrix (None for RGB, which needs none)."""
    return _SWSCALE_MATRIX.get(matrix)


@dataclass(frozen=True)
class Orientation:
    """How stored frames are turned to be shown upright (FFmpeg's display matrix, as the ffmpeg
    command line applies it): ``transpose`` swaps rows and columns, then the flips."""

    transpose: bool = False
    flip_rows: bool = False  # upside down
    flip_columns: bool = False  # mirrored

    @property
    def degrees(self) -> str:
        """Readable name, e.g. "rotated 90 degrees counter-clockwise"."""
        names = {(False, False, False): "upright", (True, True, False): "rotated 90 degrees counter-clockwise",
                 (True, False, True): "rotated 90 degrees clockwise", (False, True, True): "rotated 180 degrees",
                 (False, True, False): "flipped upside down", (False, False, True): "mirrored",
                 (True, False, False): "transposed", (True, True, True): "anti-transposed"}
        return names[(self.transpose, self.flip_rows, self.flip_columns)]

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 stored frame -> the frame as shown (a contiguous copy when anything changes)."""
        if self.transpose:
            rgb = rgb.transpose(1, 0, 2)
        if self.flip_rows:
            rgb = rgb[::-1]
        if self.flip_columns:
            rgb = rgb[:, ::-1]
        return np.ascontiguousarray(rgb) if (self.transpose or self.flip_rows or self.flip_columns) else rgb


def orientation_of(matrix: np.ndarray | None, what: str) -> Orientation:
    """The ``Orientation`` of an FFmpeg display matrix (9 int32, 16.16 fixed point; None: upright).

    The matrix maps a stored pixel (x, y) to (a*x + c*y, b*x + d*y) on screen (``[a b u c d v x y
    w]``); only quarter turns and flips are supported, anything else is a DataError.
    """
    if matrix is None:
        return Orientation()
    a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
    sign = {65536: 1, -65536: -1, 0: 0}
    if not all(v in sign for v in (a, b, c, d)) or (a != 0) == (b != 0) or (a != 0) != (d != 0):
        angle = float(np.degrees(np.arctan2(b, a)))
        raise DataError(f"{what}: its rotation metadata turns the picture by {angle:.1f} degrees; only quarter "
                        "turns and flips are supported (re-encode it upright first)")
    if a != 0:  # x' = a x, y' = d y
        return Orientation(False, flip_rows=sign[d] < 0, flip_columns=sign[a] < 0)
    return Orientation(True, flip_rows=sign[b] < 0, flip_columns=sign[c] < 0)  # x' = c y, y' = b x


@dataclass
class VideoInfo:
    """The video stream of a file, as decoded. ``pts``: each frame's presentation timestamp in
    ``time_base`` units (strictly increasing); ``durations`` likewise (the last frame's from
    the file, else the previous frame's spacing)."""

    path: Path
    stream_index: int
    codec: str
    width: int  # as shown (after orientation)
    height: int
    pix_fmt: str
    time_base: Fraction
    pts: list[int]
    durations: list[int]
    average_rate: Fraction | None
    orientation: Orientation
    colour: Colour
    sample_aspect_ratio: Fraction | None
    announced_frames: int  # what the container says (0 when it does not)
    other_streams: list[str] = field(default_factory=list)  # e.g. "audio aac (stream 1)"
    retimed: bool = False  # timestamps were missing or out of order: rebuilt at average_rate

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, 3

    def seconds(self, index: int) -> float:
        return float(self.pts[index] * self.time_base)


def open_video(path: Path) -> av.container.InputContainer:
    """``path`` opened for reading; a DataError when FFmpeg cannot read it."""
    try:
        return av.open(str(path), mode="r")
    except av.FFmpegError as error:
        raise DataError(f"{path}: not a video file FFmpeg can read ({_reason(error)})") from None


def _reason(error: av.FFmpegError) -> str:
    return getattr(error, "strerror", None) or str(error)


def video_stream_of(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The file's main video stream (cover pictures skipped); DataError when it has none."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    found = ", ".join(f"{s.type} {s.codec_context.name if s.codec_context else '?'}" for s in container.streams)
    raise DataError(f"{path}: holds no video stream ({found or 'no streams at all'})")


def decoded_frames(container: av.container.InputContainer, stream) -> Iterator[av.VideoFrame]:
    """The frames of ``stream`` in presentation order, decoded on the calling thread.

    No FFmpeg decoding threads: a reader is a dataset's frame source, and a DataLoader worker
    forked while an open decoder's threads held a lock hung in the test suite. Decoding costs
    milliseconds per frame next to the network's seconds, and ``FramePrefetcher`` overlaps it."""
    stream.codec_context.thread_count = 1
    return container.decode(stream)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Decode ``path`` once: its frames' timestamps, size, orientation and colour (see ``VideoInfo``).

    A decoding error ends the frames (a truncated or damaged file): the frames before it are
    the video, and a warning gives both counts when the container announced more.
    """
    path = Path(path)
    with open_video(path) as container:
        stream = video_stream_of(container, path)
        context = stream.codec_context
        if context is None or context.codec is None:
            raise DataError(f"{path}: FFmpeg has no decoder for its video codec")
        pts: list[int | None] = []
        durations: list[int] = []
        first = None
        try:
            for frame in decoded_frames(container, stream):
                if first is None:
                    first = frame
                pts.append(frame.pts)
                durations.append(int(frame.duration or 0))
        except av.FFmpegError as error:
            if first is None:
                raise DataError(f"{path}: no decodable video frames ({_reason(error)})") from None
            logger.warning("%s: decoding stopped at frame %d (%s); the frames before it are used",
                           path, len(pts), _reason(error))
        if first is None:
            raise DataError(f"{path}: no decodable video frames (the container announces {stream.frames})")
        matrix = next((np.frombuffer(memoryview(side).tobytes()[:36], np.int32) for side in first.side_data
                       if side.type == av.sidedata.sidedata.Type.DISPLAYMATRIX), None)
        orientation = orientation_of(matrix, str(path))
        width, height = (first.height, first.width) if orientation.transpose else (first.width, first.height)
        sar = stream.sample_aspect_ratio or context.sample_aspect_ratio
        if sar is not None and (sar <= 0 or sar == 1):
            sar = None
        elif sar is not None and orientation.transpose:
            sar = 1 / sar
        colour = Colour(int(first.colorspace), int(first.color_range), int(context.color_primaries),
                        int(context.color_trc))
        info = VideoInfo(
            path=path, stream_index=stream.index, codec=context.name, width=width, height=height,
            pix_fmt=first.format.name, time_base=stream.time_base or Fraction(1, 90000), pts=[],
            durations=[], average_rate=stream.average_rate or stream.guessed_rate, orientation=orientation,
            colour=colour, sample_aspect_ratio=sar, announced_frames=max(int(stream.frames or 0), 0),
            other_streams=[f"{s.type} {s.codec_context.name if s.codec_context else s.codec_tag} (stream {s.index})"
                           for s in container.streams if s.index != stream.index])
    info.pts, info.durations, info.retimed = _timestamps(pts, durations, info.time_base, info.average_rate)
    if info.retimed:
        logger.warning("%s: frame timestamps are missing or out of order; the frames are timed at %s frames/s",
                       path, f"{float(info.average_rate or 25):.6g}")
    if info.num_frames < info.announced_frames:
        logger.warning("%s: the container announces %d frames but only %d decode (truncated or damaged file?); "
                       "the frames after frame %d are missing", path, info.announced_frames, info.num_frames,
                       info.num_frames - 1)
    return info


def _timestamps(pts: list[int | None], durations: list[int], time_base: Fraction,
                rate: Fraction | None) -> tuple[list[int], list[int], bool]:
    """(pts, durations, retimed): the decoded timestamps when every frame has one and they
    increase, else a constant rate (``rate``, or 25 frames/s) from the first timestamp."""
    if all(p is not None for p in pts) and all(b > a for a, b in pairwise(pts)):
        steps = [b - a for a, b in pairwise(pts)]
        last = durations[-1] if durations[-1] > 0 else (steps[-1] if steps else max(durations[-1], 1))
        return list(pts), steps + [last], False
    step = (1 / (rate or Fraction(25))) / time_base
    start = pts[0] if pts[0] is not None else 0
    retimed = [start + round(i * step) for i in range(len(pts))]
    return retimed, [max(round(step), 1)] * len(pts), True


class VideoFileReader:
    """Random access to the frames of a video file (HxWx3 uint8 RGB, upright), fast in order.

    Frames are decoded sequentially (frame-exact for every codec); the last ``cache`` frames are
    kept, a request behind them restarts decoding from the start, and frames skipped to reach a
    later one are decoded but not converted to RGB. The file is opened lazily per process
    (DataLoader workers each get their own). ``info`` describes the stream (``probe_video``).
    """

    def __init__(self, path: str | os.PathLike, cache: int = 16) -> None:
        self.path = Path(path)
        self.cache_size = cache
        self.info = probe_video(self.path)
        self.num_frames, self.shape, self.announced_frames = self.info.num_frames, self.info.shape, \
            self.info.announced_frames
        self._container = None
        self._frames: Iterator[av.VideoFrame] | None = None
        self._pid: int | None = None
        self._next = 0
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_container=None, _frames=None, _pid=None, _next=0, _cache=OrderedDict())
        return state

    def _restart(self) -> None:
        self.close()
        self._container = open_video(self.path)
        stream = self._container.streams[self.info.stream_index]
        self._frames, self._pid, self._next = decoded_frames(self._container, stream), os.getpid(), 0
        self._cache.clear()

    def close(self) -> None:
        """Release the decoder (reading again reopens the file)."""
        if self._container is not None and self._pid == os.getpid():
            self._container.close()
        self._container, self._frames = None, None

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded frame as HxWx3 uint8 RGB, converted with the stream's matrix and range, upright."""
        colour = self.info.colour
        rgb = frame.to_ndarray(format="rgb24", src_colorspace=swscale_matrix(colour.matrix_for(frame.width,
                                                                                                  frame.height)),
                               src_color_range=colour.range_for(frame.format.name))
        return self.info.orientation.apply(rgb)

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` as HxWx3 uint8 RGB."""
        if index in self._cache:
            return self._cache[index]
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{self.path}: frame {index} of {self.num_frames}")
        if self._frames is None or self._pid != os.getpid() or index < self._next:
            self._restart()
        while self._next <= index:
            try:
                frame = next(self._frames)
            except (StopIteration, av.FFmpegError) as error:
                reason = "the file ended" if isinstance(error, StopIteration) else _reason(error)
                raise DataError(f"{self.path}: frame {self._next} could not be decoded ({reason}; "
                                f"{self.num_frames} decoded when the file was opened: did it change?)") from None
            if self._next > index - self.cache_size:
                self._cache[self._next] = self.to_rgb(frame)
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            self._next += 1
        return self._cache[index]
