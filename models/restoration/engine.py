"""The restoration engine: a network on its device and precision, restoring windows of frames.

``Engine.restore(frames, windows)`` restores the centre frame of each window. Networks with
``extract_features``/``restore_from_features`` (EDVR) compute each frame's feature pyramid once
for all the windows that share it (``PyramidCache``), then align and fuse frame by frame and
upsample in row strips, which bounds memory: the arithmetic of a forward per window, with the
fusion's sums taken in another order (float rounding only). Large frames can be restored in
tiles with context (``Tiling``). Other networks (e.g. the bicubic baseline) run as ``net(windows)``.

A network used here states its geometry: ``scale``, ``size_multiple``, ``num_frame`` and
``center_frame_idx`` (see ``models.edvr.EDVR``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ops.dcn import dcn_packs

Pyramid = list[Tensor]  # a frame's feature pyramid [L1, L2, L3], each (1, F, h, w)


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


def prepare_for_inference(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` on ``device`` in eval mode, without gradients; on CPU in channels-last layout.

    Channels-last is oneDNN's native layout: convolutions skip a reorder of every input and
    output (EDVR-M at 180x320: 11.3 -> 8.6 s per window on 2 cores). DCN offset statistics (a
    training diagnostic) are turned off. Changes ``net`` in place.
    """
    net = net.to(device).eval().requires_grad_(False)
    for pack in dcn_packs(net):
        pack.track_offsets = False
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    return net


PRECISION_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,  # None: the network's own (float32)
}
PRECISION_CHOICES = ("auto", *PRECISION_DTYPES)
# CPU features that multiply bfloat16 natively (/proc/cpuinfo names): AVX512-BF16 dot products, AMX.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    """The precision restoration runs in: ``name`` (a ``PRECISION_DTYPES`` key) and why it was chosen."""

    name: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype for ``Engine(precision=...)``; None: float32, the network's own."""
        return PRECISION_DTYPES[self.name]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags as the kernel reports them (Linux), or None where it cannot tell."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return None


def choose_precision(requested: str, device: torch.device, flags: set[str] | None = None) -> Precision:
    """The precision for ``requested`` (one of ``PRECISION_CHOICES``) on ``device``.

    ``auto`` picks bfloat16 where the hardware computes it natively: a CUDA GPU that supports it,
    a CPU with AVX512-BF16 or AMX (read from ``flags``, default ``cpu_flags()``; not guessed where
    they cannot be read); float32 elsewhere. bfloat16 restoration of EDVR stays within 0.05 dB PSNR
    of float32 (docs/benchmarks.md, "Precision"). Named precisions are taken as they are.
    """
    if requested != "auto":
        if requested not in PRECISION_DTYPES:
            raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISION_CHOICES)}")
        return Precision(requested, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return Precision("bf16", f"auto: {torch.cuda.get_device_name(device)} supports bfloat16")
        return Precision("fp32", f"auto: {torch.cuda.get_device_name(device)} has no native bfloat16")
    if device.type != "cpu":
        return Precision("fp32", f"auto: float32 on {device.type} devices")
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return Precision("fp32", "auto: the CPU's features cannot be read (no /proc/cpuinfo), so float32")
    native = [flag for flag in BFLOAT16_CPU_FLAGS if flag in flags]
    if native:
        return Precision("bf16", f"auto: the CPU computes bfloat16 natively ({', '.join(native)})")
    return Precision("fp32", f"auto: the CPU has no native bfloat16 ({' or '.join(BFLOAT16_CPU_FLAGS)})")


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


def upsample_strip_rows(feature_width: int, channels: int = 64, budget_bytes: int = 32 << 20) -> int:
    """Feature rows per upsampling strip (``EDVR.restore_from_features``) for features
    ``feature_width`` columns wide: the largest activation of the tail, ``channels`` channels at
    4x the rows and columns in float32, stays near ``budget_bytes``."""
    return max(8, budget_bytes // (4 * channels * 16 * max(feature_width, 1)))


class PyramidCache:
    """Feature pyramids of frames by key (a clip index, or any hashable naming a frame), kept only
    while windows use them: ``keep_only`` drops the others before new ones are computed."""

    def __init__(self) -> None:
        self._pyramids: dict[Hashable, Pyramid] = {}

    def __len__(self) -> int:
        return len(self._pyramids)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._pyramids

    def keep_only(self, keys: set[Hashable]) -> None:
        for key in [k for k in self._pyramids if k not in keys]:
            del self._pyramids[key]

    def __getitem__(self, key: Hashable) -> Pyramid:
        return self._pyramids[key]

    def add_missing(self, keys: Iterable[Hashable], compute: Callable[[Hashable], Pyramid]) -> None:
        """Compute the pyramids of those ``keys`` that have none yet, in order."""
        for key in keys:
            if key not in self._pyramids:
                self._pyramids[key] = compute(key)


class Engine:
    """``net`` (already on its device, e.g. through ``prepare_for_inference``) restoring windows
    of frames in ``precision`` (an autocast dtype; None: the network's own), tile by tile with
    ``tiling``. The engine never changes the network (its mode, device or gradients)."""

    def __init__(self, net: nn.Module, *, precision: torch.dtype | None = None, tiling: Tiling = Tiling()):
        self.net = net
        self.precision = precision
        self.tiling = tiling
        self.pyramids = PyramidCache()

    @property
    def scale(self) -> int:
        return self.net.scale

    @property
    def size_multiple(self) -> int:
        return self.net.size_multiple

    @property
    def num_frame(self) -> int:
        return self.net.num_frame

    def restore(self, frames: Mapping[Hashable, Tensor], windows: Sequence[Sequence[Hashable]]) -> Tensor:
        """The centre frame of each window: ``frames`` (key -> (C, H, W) on the network's device,
        H and W multiples of ``size_multiple``) and ``windows`` (B sequences of ``num_frame``
        keys) -> (B, C_out, H*scale, W*scale), float32.

        Untiled, the pyramids of these windows' frames are kept for the next call and all
        others dropped; tiled, pyramids are per tile and not kept.
        """
        height, width = next(iter(frames.values())).shape[-2:]
        boxes = tile_boxes(height, width, self.tiling, self.size_multiple)
        if len(boxes) == 1:
            self.pyramids.keep_only({key for window in windows for key in window})
            return self._restore_box(frames, windows, boxes[0][1], self.pyramids)
        scale, out = self.scale, None
        for (top, left, bottom, right), context in boxes:
            tile = self._restore_box(frames, windows, context, PyramidCache())
            if out is None:
                out = tile.new_empty(len(windows), tile.shape[1], height * scale, width * scale)
            ctop, cleft = context[:2]
            out[..., top * scale : bottom * scale, left * scale : right * scale] = tile[
                ..., (top - ctop) * scale : (bottom - ctop) * scale, (left - cleft) * scale : (right - cleft) * scale]
            del tile
        return out

    def restore_batch(self, lq: Tensor, keys: Sequence[Hashable] | None = None) -> Tensor:
        """Restore windows given as a batch of any frame size: (B, T, C, h, w) -> (B, C_out,
        h*scale, w*scale), float32. Frames are reflect-padded at the bottom/right to the size
        multiple (once for the whole frame, so tiles see the same border) and the output cropped.

        ``keys`` (B = 1): names of the T frames (e.g. (clip, index)), so that consecutive
        windows of a clip reuse the pyramids of the frames they share.
        """
        b, t, _, h, w = lq.shape
        padded = pad_to_multiple(lq, self.size_multiple)
        if keys is None:
            frames = dict(enumerate(padded.flatten(0, 1)))
            windows = [list(range(j * t, (j + 1) * t)) for j in range(b)]
        elif b != 1 or len(keys) != t:
            raise ValueError(f"restore_batch: keys {list(keys)} need one window of {t} frames, got {tuple(lq.shape)}")
        else:
            frames, windows = dict(zip(keys, padded[0])), [list(keys)]
        return self.restore(frames, windows)[..., : h * self.scale, : w * self.scale]

    def _restore_box(self, frames: Mapping[Hashable, Tensor], windows: Sequence[Sequence[Hashable]],
                     box: tuple[int, int, int, int], pyramids: PyramidCache) -> Tensor:
        """``restore`` on the (top, left, bottom, right) box of every frame."""
        top, left, bottom, right = box

        def crop(key: Hashable) -> Tensor:
            return frames[key][:, top:bottom, left:right]

        net, device = self.net, next(iter(frames.values())).device
        with torch.autocast(device.type, dtype=self.precision, enabled=self.precision is not None):
            if not hasattr(net, "restore_from_features"):
                out = net(torch.stack([torch.stack([crop(key) for key in window]) for window in windows]))
            else:
                keys = dict.fromkeys(key for window in windows for key in window)  # in order, once each
                pyramids.add_missing(keys, lambda key: net.extract_features(crop(key)[None]))
                per_position = [[_cat([pyramids[window[t]][level] for window in windows]) for level in range(3)]
                                for t in range(len(windows[0]))]
                centre = torch.stack([crop(window[net.center_frame_idx]) for window in windows])
                feature_width = (right - left) * self.scale // 4  # the x4 upsampling tail's input
                out = net.restore_from_features(per_position, centre, strip_rows=upsample_strip_rows(feature_width))
        return out.to(torch.promote_types(out.dtype, torch.float32))  # float32 out of autocast


def _cat(tensors: list[Tensor]) -> Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)
