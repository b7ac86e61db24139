"""Network weights on disk: BasicSR-compatible files, safe loading, atomic saving.

A weights file holds ``{"params": state_dict}`` and optionally ``"params_ema"``
(BasicSR's format). ``load_network`` also accepts a bare state dict, and keys
prefixed by ``module.`` (DDP) or ``_orig_mod.`` (torch.compile). Loading always
uses ``torch.load(..., weights_only=True)``: a file that needs arbitrary unpickling
(and could run code) is refused.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PARAM_KEYS = ("params", "params_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A weights file cannot be read, or does not fit the network."""


def load_network(
    net: nn.Module, path: str | os.PathLike, key: str = "auto", strict: bool = True
) -> str:
    """Load weights from ``path`` into ``net``.

    Args:
        net: the network (a DDP/compiled wrapper is unwrapped).
        path: a BasicSR-format file (``{"params": sd}``, ``{"params_ema": sd}`` or
            both), or a bare state dict.
        key: "params", "params_ema", or "auto" (params_ema if present, else params,
            else the bare state dict).
        strict: if True, missing, unexpected or shape-mismatched keys raise one
            CheckpointError listing them all; if False, the matching keys are loaded
            and the others logged.

    Returns:
        The key that was loaded ("params", "params_ema" or "state_dict").
    """
    state_dict, used_key = _read_state_dict(Path(path), key)
    net = unwrap(net)
    own = net.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    problems = _describe_problems(missing, unexpected, mismatched)
    if problems and strict:
        raise CheckpointError(
            f"{path} [{used_key}] does not match {type(net).__name__}:\n{problems}\n"
            "Check that the network options (num_feat, num_frame, with_tsa, ...) are those the "
            "weights were trained with, or load with strict=False to take only the matching keys."
        )
    if problems:
        logger.warning("Loading %s [%s] partially (strict=False):\n%s", path, used_key, problems)
    matching = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    net.load_state_dict(matching, strict=strict)
    logger.info("Loaded %s [%s] into %s", path, used_key, type(net).__name__)
    return used_key


def save_network(
    path: str | os.PathLike,
    params: nn.Module | Mapping[str, Tensor],
    params_ema: nn.Module | Mapping[str, Tensor] | None = None,
    network: Mapping[str, Any] | None = None,
) -> None:
    """Write ``{"params": ..., "params_ema": ..., "network": ...}`` atomically (BasicSR-compatible).

    Tensors are moved to the CPU and wrapper prefixes (``module.``, ``_orig_mod.``)
    removed, so the file loads into a plain network on any device. ``network`` (plain
    values: ``{"type": "EDVR", **constructor arguments}``) lets a restore rebuild the
    architecture from the file alone; BasicSR ignores the extra key.
    """
    checkpoint: dict[str, Any] = {"params": _clean_state_dict(params)}
    if params_ema is not None:
        checkpoint["params_ema"] = _clean_state_dict(params_ema)
    if network is not None:
        checkpoint["network"] = dict(network)
    atomic_torch_save(checkpoint, path)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The raw content of a weights file, loaded safely (weights_only), for metadata lookups."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: cannot be loaded safely (torch.load with weights_only=True): {error}\n"
            "The file is corrupt, not a PyTorch weights file, or holds Python objects that "
            "would need arbitrary code to unpickle (refused: only tensors and plain containers load)."
        ) from error


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through ``atomic_write``: never a half-written file under ``path``."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """``write(handle)`` to a temporary file in the same folder, fsync, then rename.

    A crash or a full disk leaves either the previous file or the complete new one,
    never a half-written file under ``path``; the temporary file is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with mode 0o666 honours the umask, unlike tempfile.mkstemp (always 0o600)
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def unwrap(net: nn.Module) -> nn.Module:
    """The plain network inside DDP/DataParallel (``.module``) and torch.compile (``._orig_mod``)."""
    while True:
        if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            net = net.module
        elif hasattr(net, "_orig_mod") and isinstance(net._orig_mod, nn.Module):
            net = net._orig_mod
        else:
            return net


def _read_state_dict(path: Path, key: str) -> tuple[dict[str, Tensor], str]:
    if key not in ("auto",) + PARAM_KEYS:
        raise ValueError(f"key: expected 'auto', 'params' or 'params_ema', got {key!r}")
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: expected a dict of weights, got {type(checkpoint).__name__}")

    if key == "auto":
        key = next((k for k in ("params_ema", "params") if k in checkpoint), "state_dict")
    if key == "state_dict":
        state_dict = checkpoint
        if not state_dict or not all(isinstance(v, Tensor) for v in state_dict.values()):
            raise CheckpointError(
                f"{path}: holds neither 'params' nor 'params_ema', and is not a state dict of "
                f"tensors; its top-level keys: {_preview(list(checkpoint))}"
            )
    elif key in checkpoint:
        state_dict = checkpoint[key]
    else:
        raise CheckpointError(
            f"{path}: has no {key!r} entry; its top-level keys: {_preview(list(checkpoint))}"
        )
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path} [{key}]: expected a state dict, got {type(state_dict).__name__}")
    return _strip_prefixes(state_dict), key


def _clean_state_dict(params: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    state_dict = unwrap(params).state_dict() if isinstance(params, nn.Module) else params
    return {k: v.detach().cpu() for k, v in _strip_prefixes(state_dict).items()}


def _strip_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    cleaned = {}
    for name, value in state_dict.items():
        while name.startswith(WRAPPER_PREFIXES):
            name = name.partition(".")[2]
        cleaned[name] = value
    return cleaned


def _describe_problems(missing: list[str], unexpected: list[str], mismatched: list[str]) -> str:
    lines = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            lines.append(f"  {title} ({len(keys)}): {_preview(keys, limit=20)}")
    return "\n".join(lines)


def _preview(items: list[str], limit: int = 10) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
