"""Checks on the frames of a clip: gaps in the frame numbering, and one frame size per clip.

A clip's frame names *share a numbering* when each is ``<prefix><number><suffix>`` with the same
prefix and suffix (``00000007``, ``frame_0007``, ``im7``); the number is the last run of digits.
A number missing between the first and the last frame is a gap: a temporal window across it
would silently join frames that are not neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from data.storage import DataError, FrameStore

_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<digits>\d+)(?P<suffix>\D*)$")
MAX_LISTED_RANGES = 8  # in messages: "3-5, 9, ... (40 missing)"


def missing_ranges(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """(first, last) of each run of numbers absent between the smallest and the largest of
    ``numbers``: [0, 1, 4, 9] -> [(2, 3), (5, 8)] (never enumerates the gaps themselves)."""
    ordered = sorted(numbers)
    return [(a + 1, b - 1) for a, b in pairwise(ordered) if b - a > 1]


def format_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    """[(3, 5), (9, 9)] -> "3-5, 9" (long lists are cut, giving how many numbers are missing)."""
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges]
    if len(parts) > MAX_LISTED_RANGES:
        total = sum(b - a + 1 for a, b in ranges)
        parts = parts[:MAX_LISTED_RANGES] + [f"... ({total} missing)"]
    return ", ".join(parts)


def frame_numbers(names: Sequence[str]) -> tuple[str, str, int, list[int]] | None:
    """(prefix, suffix, digits of the shortest number, the numbers) when every name is
    ``<prefix><number><suffix>`` with one prefix and suffix and no number twice, else None."""
    matches = [_NUMBERED.match(name) for name in names]
    if not names or None in matches:
        return None
    affixes = {(m["prefix"], m["suffix"]) for m in matches}
    numbers = [int(m["digits"]) for m in matches]
    if len(affixes) != 1 or len(set(numbers)) != len(numbers):
        return None
    (prefix, suffix), width = affixes.pop(), min(len(m["digits"]) for m in matches)
    return prefix, suffix, width, numbers


def fill_gaps(names: Sequence[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """(the names of every number from the first to the last frame, the gaps as ``missing_ranges``).

    Names that do not share a numbering (``frame_numbers``) come back as given, with no gaps.
    Missing names are spelled like the others (same prefix, suffix, zero padding):
    ``["f08", "f11"]`` -> ``(["f08", "f09", "f10", "f11"], [(9, 10)])``. Meant for training
    clips, whose numbering is dense; ``check_no_gaps`` suits any numbering.
    """
    numbering = frame_numbers(names)
    if numbering is None:
        return list(names), []
    prefix, suffix, width, numbers = numbering
    by_number = dict(zip(numbers, names))
    span = range(min(numbers), max(numbers) + 1)
    filled = [by_number.get(n, f"{prefix}{n:0{width}d}{suffix}") for n in span]
    return filled, missing_ranges(numbers)


GAP_REMEDY = "add the missing frames, or number the frames consecutively"


def check_no_gaps(names: Sequence[str], what: str, remedy: str = GAP_REMEDY) -> None:
    """Raise DataError when ``names`` (one clip's frames, in order) skip a number; ``what`` names
    the clip, ``remedy`` ends the message."""
    numbering = frame_numbers(names)
    gaps = missing_ranges(numbering[3]) if numbering is not None else []
    if gaps:
        raise DataError(
            f"{what}: the frame numbering has a gap: no frame numbered {format_ranges(gaps)} "
            f"(frames {names[0]} ... {names[-1]}); windows would join frames that are not neighbours: "
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
