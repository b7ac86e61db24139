"""Running a trained network over frames: padding, spatial tiles, temporal windows, scene cuts.

``restore_window`` restores the centre frame of one window, tiling large frames;
``restore_sequence`` streams a whole clip through the network: each input frame is decoded
once (by a reader thread, overlapping with compute), windows never cross a scene cut, and
restored frames come out in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from data.transforms import temporal_indices


@dataclass(frozen=True)
class Tiling:
    """Spatial tiles of ``size`` LR pixels; each is run with ``overlap`` pixels of context on every
    side and only its core is kept ("crop" seams, no blending). The result equals the untiled one
    wherever the overlap covers the network's receptive field; ``size=None`` disables tiling."""

    size: int | None = None
    overlap: int = 16


def _forward(net: nn.Module, lq: Tensor, amp_dtype: torch.dtype | None) -> Tensor:
    """The network on (B, T, C, h, w) windows whose size it accepts, under optional autocast; float32 out."""
    with torch.autocast(lq.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        return net(lq).float()


def tile_boxes(height: int, width: int, tiling: Tiling, multiple: int = 4) -> list[tuple[tuple, tuple]]:
    """[(core, context)] boxes (top, left, bottom, right) covering an h x w frame.

    Cores partition the frame; each context is its core grown by the overlap and clipped to
    the frame. Corners are multiples of ``multiple`` so the network's stride-2/4 grids line
    up with those of the whole frame.
    """
    if tiling.size is None or (tiling.size >= height and tiling.size >= width):
        return [((0, 0, height, width), (0, 0, height, width))]
    if tiling.size % multiple or tiling.overlap % multiple or tiling.size <= 0 or tiling.overlap < 0:
        raise ValueError(f"tile size ({tiling.size}) and overlap ({tiling.overlap}) must be non-negative "
                         f"multiples of {multiple}")
    boxes = []
    for top in range(0, height, tiling.size):
        for left in range(0, width, tiling.size):
            bottom, right = min(top + tiling.size, height), min(left + tiling.size, width)
            context = (max(top - tiling.overlap, 0), max(left - tiling.overlap, 0),
                       min(bottom + tiling.overlap, height), min(right + tiling.overlap, width))
            boxes.append(((top, left, bottom, right), context))
    return boxes


def restore_window(net: nn.Module, lq: Tensor, tiling: Tiling = Tiling(), multiple: int = 4, scale: int = 4,
                   amp_dtype: torch.dtype | None = None) -> Tensor:
    """Restore the centre frame of each window: (B, T, C, h, w) -> (B, C, h*scale, w*scale).

    Frames whose size is not a multiple of ``multiple`` are reflect-padded at the bottom/right
    (once, for the whole frame, so tiles see the same border as the untiled run) and the output
    is cropped back. ``scale`` is 1 for hr_in networks. With ``tiling.size`` the frame is
    restored tile by tile (see ``Tiling``).
    """
    b, t, c, h, w = lq.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        if pad_h >= h or pad_w >= w:
            raise ValueError(f"frames of {h}x{w} are too small to pad to a multiple of {multiple}")
        lq = F.pad(lq.reshape(b, t * c, h, w), (0, pad_w, 0, pad_h), mode="reflect").view(b, t, c, h + pad_h, w + pad_w)
    boxes = tile_boxes(h + pad_h, w + pad_w, tiling, multiple)
    if len(boxes) == 1:
        return _forward(net, lq, amp_dtype)[..., : h * scale, : w * scale]
    out = None
    for (top, left, bottom, right), (ctop, cleft, cbottom, cright) in boxes:
        tile = _forward(net, lq[..., ctop:cbottom, cleft:cright], amp_dtype)
        if out is None:
            out = tile.new_empty(b, tile.shape[1], (h + pad_h) * scale, (w + pad_w) * scale)
        core = tile[..., (top - ctop) * scale : (bottom - ctop) * scale, (left - cleft) * scale : (right - cleft) * scale]
        out[..., top * scale : bottom * scale, left * scale : right * scale] = core
    return out[..., : h * scale, : w * scale]


def scene_cut_before(previous: np.ndarray, frame: np.ndarray, threshold: float) -> bool:
    """Whether a hard cut separates two HxWx3 uint8 frames: mean absolute difference of their
    grey, 1/8-size thumbnails (0-255 scale) above ``threshold``."""
    def thumbnail(img: np.ndarray) -> np.ndarray:
        grey = img.astype(np.float32).mean(axis=2)
        h, w = grey.shape
        return grey[: h - h % 8, : w - w % 8].reshape(h // 8, 8, w // 8, 8).mean(axis=(1, 3))

    return float(np.abs(thumbnail(previous) - thumbnail(frame)).mean()) > threshold


def window_indices(center: int, shot: tuple[int, int], num_frame: int, padding: str) -> list[int]:
    """Frame indices of the window around ``center``, never leaving ``shot`` = [start, end).

    Shots too short for ``padding`` (e.g. fewer frames than the window) repeat their border
    frames ("replicate") instead.
    """
    start, end = shot
    try:
        local = temporal_indices(center - start, end - start, num_frame, padding)
    except ValueError:
        local = temporal_indices(center - start, end - start, num_frame, "replicate")
    return [start + i for i in local]


def _reader(read_frame: Callable[[int], np.ndarray], count: int, frames: queue.Queue, stop: threading.Event) -> None:
    """Decode frames 0..count-1 in order into ``frames`` (an exception is passed on as the item)."""
    try:
        for index in range(count):
            if stop.is_set():
                return
            frames.put(read_frame(index))
    except BaseException as error:  # handed to the consumer, which re-raises it
        frames.put(error)


def restore_sequence(
    net: nn.Module,
    read_frame: Callable[[int], np.ndarray],
    count: int,
    num_frame: int,
    device: torch.device,
    padding: str = "reflection_circle",
    tiling: Tiling = Tiling(),
    scale: int = 4,
    multiple: int = 4,
    scene_cut_threshold: float | None = None,
    batch_size: int = 1,
    amp_dtype: torch.dtype | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(index, input frame, restored frame)`` for every frame, in order.

    ``read_frame(i)`` gives HxWx3 uint8 RGB (all the same size); restored frames are
    (H*scale)x(W*scale)x3 uint8 RGB. With ``scene_cut_threshold`` a window never takes frames
    across a detected hard cut. ``batch_size`` windows run through the network at once.
    Memory: the frames of the current windows plus a few decoded ahead.
    """
    half = num_frame // 2
    reach = 2 * half  # the furthest any padding mode looks from its centre
    frames: queue.Queue = queue.Queue(maxsize=reach + batch_size + 2)
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(read_frame, count, frames, stop), daemon=True)
    reader.start()
    decoded: dict[int, np.ndarray] = {}
    cuts: list[int] = []  # frame indices that start a new shot
    loaded = 0

    def load_until(index: int) -> None:
        nonlocal loaded
        while loaded <= min(index, count - 1):
            item = frames.get()
            if isinstance(item, BaseException):
                raise item
            if scene_cut_threshold is not None and loaded > 0 and scene_cut_before(decoded[loaded - 1], item,
                                                                                   scene_cut_threshold):
                cuts.append(loaded)
            decoded[loaded] = item
            loaded += 1

    def shot_of(index: int) -> tuple[int, int]:
        """[start, end) of the shot holding ``index``, as far as frames are loaded: an end not yet
        seen lies beyond every index the window may take, so no end padding is applied early."""
        start = max([0] + [c for c in cuts if c <= index])
        end = min([c for c in cuts if c > index] + [loaded])
        return start, end

    try:
        net.eval()
        for first in range(0, count, batch_size):
            centers = list(range(first, min(first + batch_size, count)))
            load_until(centers[-1] + reach)
            windows = []
            for center in centers:
                windows.append(window_indices(center, shot_of(center), num_frame, padding))
            lq = torch.stack([
                torch.from_numpy(np.stack([decoded[i] for i in window])).permute(0, 3, 1, 2) for window in windows
            ]).to(device=device, dtype=torch.float32).div_(255)
            with torch.inference_mode():
                out = restore_window(net, lq, tiling, multiple, scale, amp_dtype)
                out = (out.clamp_(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for center, restored in zip(centers, out):
                yield center, decoded[center], restored
            for index in [i for i in decoded if i < centers[-1] + 1 - reach]:
                del decoded[index]
    finally:
        stop.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue
            try:
                frames.get_nowait()
            except queue.Empty:
                reader.join(timeout=0.1)


def scene_cuts_of(frames: Sequence[np.ndarray], threshold: float) -> list[int]:
    """Indices of the frames that start a new shot (a hard cut just before them)."""
    return [i for i in range(1, len(frames)) if scene_cut_before(frames[i - 1], frames[i], threshold)]
