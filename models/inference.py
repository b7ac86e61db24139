"""Running a trained network over frames: padding, spatial tiles, temporal windows, scene cuts.

``restore_windows`` restores the centre frames of windows of frames, tiling large frames;
``restore_window`` does so for (B, T, C, h, w) batches of any size (evaluation);
``restore_sequence`` streams a whole clip through the network: each input frame is decoded
once (by a reader thread, overlapping with compute) and, untiled, its feature pyramid is
computed once for the windows that share it; windows never cross a scene cut, and restored
frames come out in order.
"""

from __future__ import annotations

import ctypes
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


def prepare_for_inference(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` on ``device`` in eval mode, without gradients; on CPU in channels-last layout.

    Channels-last is oneDNN's native layout: convolutions skip a reorder of every input and
    output (EDVR-M at 180x320: 11.3 -> 8.6 s per window on 2 cores). Changes ``net`` in place.
    """
    net = net.to(device).eval().requires_grad_(False)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    return net


def release_freed_activations(threshold_bytes: int = 8 << 20) -> bool:
    """Have glibc serve every allocation of at least ``threshold_bytes`` with its own mapping, so
    that a freed activation goes back to the system at once (returns whether it applied).

    By default glibc raises this threshold up to 32 MiB as large blocks are freed, and the
    activations of a frame (15-30 MiB each at 180x320) then come from its heap, where long-lived
    feature pyramids and short-lived activations interleave and the heap keeps growing: peak
    RSS 950-1020 MiB for EDVR-M at 180x320, against 860-890 MiB with this (and 0.5 s more per
    frame for the page faults; PyTorch's THP_MEM_ALLOC_ENABLE=1, which test.py sets, keeps that
    cost low). Process-wide: for programs that restore, not for a library import.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
    m_mmap_threshold = -3
    return bool(mallopt(m_mmap_threshold, int(threshold_bytes)))


def pad_to_multiple(frames: Tensor, multiple: int) -> Tensor:
    """Reflect-pad (..., C, h, w) frames at the bottom/right to multiples of ``multiple``."""
    h, w = frames.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if not (pad_h or pad_w):
        return frames
    if pad_h >= h or pad_w >= w:
        raise ValueError(f"frames of {h}x{w} are too small to pad to a multiple of {multiple}")
    flat = frames.reshape(-1, *frames.shape[-3:])
    return F.pad(flat, (0, pad_w, 0, pad_h), mode="reflect").view(*frames.shape[:-2], h + pad_h, w + pad_w)


def strip_rows(feature_width: int) -> int:
    """Feature rows per upsampling strip (``EDVR.restore_from_features``): the largest activation,
    64 channels at 4x the rows and columns, stays near 32 MiB in float32."""
    return max(8, (32 * 2**20) // (4 * 64 * 16 * max(feature_width, 1)))


Pyramids = dict[int, list[Tensor]]  # frame index -> its feature pyramid [L1, L2, L3], (1, F, h, w)


def restore_windows(net: nn.Module, frames: dict[int, Tensor], windows: list[list[int]], tiling: Tiling = Tiling(),
                    multiple: int = 4, scale: int = 4, amp_dtype: torch.dtype | None = None,
                    pyramids: Pyramids | None = None) -> Tensor:
    """Restore the centre frame of each window: ``frames`` (index -> (C, H, W), H and W multiples
    of ``multiple``) and ``windows`` (B lists of T indices) -> (B, C_out, H*scale, W*scale), float32.

    Networks with ``extract_features``/``restore_from_features`` (EDVR) compute each frame's
    feature pyramid once for all the windows that share it, then align and fuse frame by frame
    and upsample in strips, which bounds memory: the arithmetic of a forward per window, with
    the fusion's sums taken in another order (float rounding only). Untiled,
    ``pyramids`` keeps the pyramids across calls (those of frames no window here uses are
    dropped before new ones are computed);
    tiled, pyramids are per tile and not kept. Other networks run as ``net(windows)``.
    With ``tiling.size`` the frame is restored tile by tile (see ``Tiling``).
    """
    height, width = next(iter(frames.values())).shape[-2:]
    boxes = tile_boxes(height, width, tiling, multiple)
    if len(boxes) == 1:
        if pyramids is not None:  # memory holds only the pyramids these windows use
            needed = {i for window in windows for i in window}
            for index in [i for i in pyramids if i not in needed]:
                del pyramids[index]
        return _restore_box(net, frames, windows, boxes[0][1], scale, amp_dtype, pyramids)
    out = None
    for (top, left, bottom, right), context in boxes:
        tile = _restore_box(net, frames, windows, context, scale, amp_dtype, None)
        if out is None:
            out = tile.new_empty(len(windows), tile.shape[1], height * scale, width * scale)
        ctop, cleft = context[:2]
        out[..., top * scale : bottom * scale, left * scale : right * scale] = tile[
            ..., (top - ctop) * scale : (bottom - ctop) * scale, (left - cleft) * scale : (right - cleft) * scale]
        del tile
    return out


def _restore_box(net: nn.Module, frames: dict[int, Tensor], windows: list[list[int]], box: tuple[int, int, int, int],
                 scale: int, amp_dtype: torch.dtype | None, pyramids: Pyramids | None) -> Tensor:
    """``restore_windows`` on the (top, left, bottom, right) box of every frame."""
    top, left, bottom, right = box

    def crop(index: int) -> Tensor:
        return frames[index][:, top:bottom, left:right]

    device = next(iter(frames.values())).device
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        if not hasattr(net, "restore_from_features"):
            out = net(torch.stack([torch.stack([crop(i) for i in window]) for window in windows]))
        else:
            pyramids = {} if pyramids is None else pyramids
            for index in sorted({i for window in windows for i in window} - pyramids.keys()):
                pyramids[index] = net.extract_features(crop(index)[None])
            per_position = [[_cat([pyramids[window[t]][level] for window in windows]) for level in range(3)]
                            for t in range(len(windows[0]))]
            centre = torch.stack([crop(window[net.center_frame_idx]) for window in windows])
            rows = strip_rows((right - left) * scale // 4)
            out = net.restore_from_features(per_position, centre, strip_rows=rows)
    return out.to(torch.promote_types(out.dtype, torch.float32))  # float32 out of autocast


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def restore_window(net: nn.Module, lq: Tensor, tiling: Tiling = Tiling(), multiple: int = 4, scale: int = 4,
                   amp_dtype: torch.dtype | None = None, window: list[int] | None = None,
                   pyramids: Pyramids | None = None) -> Tensor:
    """Restore the centre frame of each window: (B, T, C, h, w) -> (B, C, h*scale, w*scale), float32.

    Frames whose size is not a multiple of ``multiple`` are reflect-padded at the bottom/right
    (once, for the whole frame, so tiles see the same border as the untiled run) and the output
    is cropped back. ``scale`` is 1 for hr_in networks. With ``tiling.size`` the frame is
    restored tile by tile (see ``Tiling``). ``window`` (B = 1): the clip indices of the T
    frames; then ``pyramids`` keeps their feature pyramids from call to call (consecutive windows
    of one clip share 4 of 5 frames; pyramids of frames not in ``window`` are dropped). Give a
    fresh dict for each clip.
    """
    b, t, _, h, w = lq.shape
    padded = pad_to_multiple(lq, multiple)
    if window is None:
        frames = {i: frame for i, frame in enumerate(padded.flatten(0, 1))}
        windows = [list(range(j * t, (j + 1) * t)) for j in range(b)]
    else:
        if b != 1 or len(window) != t:
            raise ValueError(f"restore_window: window {window} needs one window of {t} frames, got shape {tuple(lq.shape)}")
        frames, windows = dict(zip(window, padded[0])), [list(window)]
    return restore_windows(net, frames, windows, tiling, multiple, scale, amp_dtype, pyramids)[..., : h * scale, : w * scale]


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
    Memory: the frames (and, untiled, the feature pyramids) of the current windows plus a few
    frames decoded ahead.
    """
    half = num_frame // 2
    reach = 2 * half  # the furthest any padding mode looks from its centre
    frames: queue.Queue = queue.Queue(maxsize=reach + batch_size + 2)
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(read_frame, count, frames, stop), daemon=True)
    reader.start()
    decoded: dict[int, np.ndarray] = {}
    tensors: dict[int, Tensor] = {}  # decoded frames as padded (C, H, W) float tensors on the device
    pyramids: Pyramids = {}
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
            tensor = torch.from_numpy(item).to(device=device).permute(2, 0, 1).float().div_(255)
            tensors[loaded] = pad_to_multiple(tensor, multiple)
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
            windows = [window_indices(center, shot_of(center), num_frame, padding) for center in centers]
            height, width = decoded[centers[0]].shape[:2]
            with torch.inference_mode():
                out = restore_windows(net, tensors, windows, tiling, multiple, scale, amp_dtype, pyramids)
                out = out[..., : height * scale, : width * scale]
                out = out.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for center, restored in zip(centers, out):
                yield center, decoded[center], restored
            for store in (decoded, tensors):
                for index in [i for i in store if i < centers[-1] + 1 - reach]:
                    del store[index]
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
