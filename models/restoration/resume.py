"""Continuing an interrupted restoration (``test.py --resume``): the record of a run's settings,
kept in each of its partial output folders, and the check that a continuation shares them.

A run records ``settings`` (a JSON-serialisable dict: weights digest, network, precision, tiles,
padding, scene cuts, input identity and frame count, and each output's own: codec options...)
when it creates a partial folder. A continuation compares its own settings with the record:
any difference is refused, naming each; keys in ``ADVISORY`` (device, threads) only change
float rounding, so a difference there is logged and accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from data.storage import IMAGE_EXTENSIONS
from models.outputs import OutputError, PartialFolder

logger = logging.getLogger(__name__)

ADVISORY = ("device", "threads")  # may differ between the parts of a run (float rounding only)
_SAMPLE_BYTES = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of a whole file (hex), e.g. of a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(path: Path) -> dict:
    """What identifies an input without reading all of it: a video file's size and a digest of its
    first and last MiB; a folder's image names and sizes (digest)."""
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        for file in files:
            digest.update(f"{file.name}\0{file.stat().st_size}\n".encode())
        return {"images": len(files), "names_and_sizes_sha256": digest.hexdigest()[:16]}
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        handle.seek(max(size - _SAMPLE_BYTES, 0))
        digest.update(handle.read(_SAMPLE_BYTES))
    return {"bytes": size, "head_tail_sha256": digest.hexdigest()[:16]}


def flatten(settings: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def differences(saved: dict, current: dict) -> tuple[list[str], list[str]]:
    """(refused, advisory) differences as ``"key: saved -> current"``."""
    before, now = flatten(saved), flatten(current)
    refused, advisory = [], []
    for key in sorted(set(before) | set(now)):
        if before.get(key, "(none)") != now.get(key, "(none)"):
            line = f"{key}: {_short(before.get(key, '(none)'))} -> {_short(now.get(key, '(none)'))}"
            (advisory if key.split(".")[0] in ADVISORY else refused).append(line)
    return refused, advisory


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def record_or_check(partial: PartialFolder, settings: dict) -> None:
    """Record ``settings`` in a new partial folder, or check a resumed one against them: an
    OutputError names every difference (the partial folder is left as it is)."""
    if not partial.resumed:
        partial.write_state({"settings": settings, "pid": os.getpid()})
        return
    state = partial.read_state()
    if state is None or not isinstance(state.get("settings"), dict):
        raise OutputError(f"--resume: {partial.path} holds no record of the settings it was written with",
                          hint="run without --resume to start afresh (the partial folder is then cleared)")
    refused, advisory = differences(state["settings"], settings)
    if refused:
        shown = "; ".join(refused[:8]) + (f"; and {len(refused) - 8} more" if len(refused) > 8 else "")
        raise OutputError(f"--resume: {partial.path} was written with other settings: {shown}",
                          hint="resume with the same settings, or run without --resume to start afresh")
    for line in advisory:
        logger.warning("--resume: %s (the frames restored from here may differ from the earlier ones by float "
                       "rounding)", line)
    partial.write_state({"settings": settings, "pid": os.getpid()})
