"""A clip streamed through the engine: frames decoded ahead on a thread, windows restored in
order, memory bounded by the frames (and, untiled, the feature pyramids) of the current windows."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .engine import Engine, pad_to_multiple
from .schedule import WindowSchedule


class FramePrefetcher:
    """Decodes frames first..count-1 in order on a thread, at most ``ahead`` frames before they are
    taken (decoding releases the GIL, so it overlaps with the network). An exception raised by
    ``read_frame`` is raised again by ``next_frame``."""

    def __init__(self, read_frame: Callable[[int], np.ndarray], count: int, ahead: int, first: int = 0):
        self._frames: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, args=(read_frame, first, count), daemon=True)
        self._thread.start()

    def _decode(self, read_frame: Callable[[int], np.ndarray], first: int, count: int) -> None:
        try:
            for index in range(first, count):
                if self._stop.is_set():
                    return
                self._frames.put(read_frame(index))
        except BaseException as error:  # handed to the consumer, which raises it
            self._frames.put(error)

    def next_frame(self) -> np.ndarray:
        item = self._frames.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        """Stop the thread (it may be waiting on a full queue)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._frames.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.1)


class RestorationStream:
    """Iterating yields ``(index, input frame, restored frame)`` for every frame from ``start``, in
    order.

    ``read_frame(i)`` gives HxWx3 uint8 RGB frames of one size; restored frames are
    (H*scale)x(W*scale)x3 uint8 RGB. ``batch_size`` windows run through the engine at once,
    batches starting at multiples of ``batch_size``. From a later ``start`` (a multiple of
    ``batch_size``: a continued run), the earlier frames are read only where the schedule must
    see them (scene-cut detection), and the frames restored are those of a run from frame 0.
    """

    def __init__(self, read_frame: Callable[[int], np.ndarray], count: int, schedule: WindowSchedule,
                 engine: Engine, device: torch.device, batch_size: int = 1, start: int = 0):
        if start % batch_size:
            raise ValueError(f"start {start} must be a multiple of the batch size {batch_size}")
        self.read_frame, self.count, self.start = read_frame, count, start
        self.schedule, self.engine, self.device, self.batch_size = schedule, engine, device, batch_size
        self.first_kept = max(0, start - schedule.reach)  # the first frame a window from ``start`` may take
        self.decoded: dict[int, np.ndarray] = {}  # frames of the current windows, as read
        self.tensors: dict[int, Tensor] = {}  # the same, as padded (C, H, W) float tensors on the device

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        if self.schedule.cut_threshold is None:
            self.schedule.skip_to(self.first_kept)
        prefetcher = FramePrefetcher(self.read_frame, self.count, self.schedule.reach + self.batch_size + 2,
                                     first=self.schedule.seen)
        try:
            for first in range(self.start, self.count, self.batch_size):
                centers = list(range(first, min(first + self.batch_size, self.count)))
                self._load_until(prefetcher, centers[-1] + self.schedule.reach)
                restored = self._restore(centers)
                for center, frame in zip(centers, restored):
                    yield center, self.decoded[center], frame
                self._forget_before(centers[-1] + 1 - self.schedule.reach)
        finally:
            prefetcher.close()

    def _load_until(self, prefetcher: FramePrefetcher, index: int) -> None:
        """Take frames from the prefetcher up to ``index`` (or the clip's end)."""
        while self.schedule.seen <= min(index, self.count - 1):
            frame = prefetcher.next_frame()
            self.schedule.observe(frame)
            index_of_frame = self.schedule.seen - 1
            if index_of_frame < self.first_kept:  # seen by the scene-cut detection only
                continue
            self.decoded[index_of_frame] = frame
            tensor = torch.from_numpy(frame).to(device=self.device).permute(2, 0, 1).float().div_(255)
            self.tensors[index_of_frame] = pad_to_multiple(tensor, self.engine.size_multiple)

    def _restore(self, centers: list[int]) -> np.ndarray:
        """(B, H*scale, W*scale, 3) uint8 of the windows around ``centers``."""
        windows = [self.schedule.window(center) for center in centers]
        height, width = self.decoded[centers[0]].shape[:2]
        scale = self.engine.scale
        with torch.inference_mode():
            out = self.engine.restore(self.tensors, windows)[..., : height * scale, : width * scale]
            return out.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _forget_before(self, index: int) -> None:
        for frames in (self.decoded, self.tensors):
            for old in [i for i in frames if i < index]:
                del frames[old]
