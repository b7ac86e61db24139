"""Checks on the frames of a clip: gaps in the frame numbering, and one frame size per clip.

A clip's frame names *share a numbering* when each is ``<prefix><number><suffix>`` with the same
prefix and suffix (``00000007``, ``frame_0007``, ``im7``); the number is the last run of digits.
A number missing between the first and the last frame is a gap: a temporal window across it
would silently join frames that are not neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from data.storage import DataError, FrameStore

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\D*)$")
MAX_LISTED_RANGES = 8  # in messages: "3-5, 9, ... (40 missing)"


def fill_gaps(names: Sequence[str]) -> tuple[list[str], list[int]]:
    """(the names of every number from the first to the last frame, the missing numbers).

    Names that do not share a numbering (or repeat a number) come back as given, with no
    missing numbers. Missing names are spelled like the others (same prefix, suffix, zero
    padding): ``["f08", "f11"]`` -> ``(["f08", "f09", "f10", "f11"], [9, 10])``.
    """
    matches = [_NUMBERED.match(name) for name in names]
    if not names or None in matches:
        return list(names), []
    prefixes = {(m["prefix"], m["suffix"]) for m in matches}
    numbers = [int(m["digits"]) for m in matches]
    if len(prefixes) != 1 or len(set(numbers)) != len(numbers):
        return list(names), []
    (prefix, suffix), width = prefixes.pop(), min(len(m["digits"]) for m in matches)
    by_number = dict(zip(numbers, names))
    span = range(min(numbers), max(numbers) + 1)
    filled = [by_number.get(n, f"{prefix}{n:0{width}d}{suffix}") for n in span]
    return filled, [n for n in span if n not in by_number]


def format_numbers(numbers: Sequence[int]) -> str:
    """Sorted numbers as ranges: [3, 4, 5, 9] -> "3-5, 9" (long lists are cut, with the total)."""
    ranges: list[list[int]] = []
    for n in sorted(numbers):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]
    if len(parts) > MAX_LISTED_RANGES:
        parts = parts[:MAX_LISTED_RANGES] + [f"... ({len(numbers)} missing)"]
    return ", ".join(parts)


GAP_REMEDY = "add the missing frames, or number the frames consecutively"


def check_no_gaps(names: Sequence[str], what: str, remedy: str = GAP_REMEDY) -> None:
    """Raise DataError when ``names`` (one clip's frames, in order) skip a number; ``what`` names
    the clip, ``remedy`` ends the message."""
    filled, missing = fill_gaps(names)
    if missing:
        raise DataError(
            f"{what}: the frame numbering has a gap: no frame numbered {format_numbers(missing)} "
            f"(frames {filled[0]} ... {filled[-1]}); windows would join frames that are not neighbours: "
            f"{remedy}"
        )


def read_frames(store: FrameStore, clip: str, names: Sequence[str], reference: str) -> list[np.ndarray]:
    """Frames ``clip/<name>`` of ``store`` as HxWx3 uint8 RGB, each checked to have the size of the
    clip's frame ``clip/<reference>`` (its first frame; read from the PNG header / LMDB meta info).

    A frame of another size raises DataError naming the store and the key (file).
    """
    reference_key = f"{clip}/{reference}"
    height, width, _ = store.shape(reference_key)
    frames = []
    for name in names:
        key = f"{clip}/{name}"
        frame = store.read(key)
        if frame.shape[:2] != (height, width):
            raise DataError(
                f"{store.where(key)}: frame is {frame.shape[1]}x{frame.shape[0]} but the clip's first frame "
                f"{reference_key} is {width}x{height}: every frame of a clip must have one size"
            )
        frames.append(frame)
    return frames
