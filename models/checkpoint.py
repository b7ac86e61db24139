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
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PARAM_KEYS = ("params", "params_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A weights file cannot be read, or does not fit the network; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


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
            CheckpointError naming them; if False, the matching keys are loaded
            and the others logged.

    Returns:
        The key that was loaded ("params", "params_ema" or "state_dict").
    """
    path = Path(path)
    _check_key(key)
    checkpoint = read_checkpoint(path)
    state_dict, used_key = _select_state_dict(checkpoint, path, key)
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
        raise CheckpointError(f"{path} [{used_key}] does not fit {type(net).__name__}: {problems}",
                              hint=_mismatch_hint(checkpoint, len(own), len(missing), len(mismatched)))
    if problems:
        logger.warning("Loading %s [%s] partially (strict=False): %s", path, used_key, problems)
    matching = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    net.load_state_dict(matching, strict=strict)
    logger.info("Loaded %s [%s] into %s", path, used_key, type(net).__name__)
    return used_key


def _mismatch_hint(checkpoint: Mapping[str, Any], num_keys: int, num_missing: int, num_mismatched: int) -> str:
    """What to do about weights that do not fit: use the architecture the file records, load
    the matching part (only when most of the network matches), or fix the network options."""
    recorded = recorded_network(checkpoint)
    if recorded is not None:
        arguments = ", ".join(f"{k}={v!r}" for k, v in recorded.items() if k != "type")
        return (f"the file records the architecture it was trained with: {recorded.get('type', 'EDVR')}"
                f"({arguments}); use these network options (test.py --input: leave out --opt)")
    if num_mismatched == 0 and num_missing < num_keys / 2:
        return "to load only the matching keys (e.g. to initialise from another stage), set path.strict_load_g: false"
    return ("the network options (num_feat, num_frame, with_tsa, num_reconstruct_block, ...) must be "
            "those the weights were trained with")


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


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a weights file, loaded safely (weights_only) and checked to be one: a
    mapping whose ``params``/``params_ema`` entries (or itself, for a bare state dict) map
    parameter names to tensors, with an optional ``network`` entry of plain values."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch weights file (it starts with {head!r}, not a torch.save "
                              "archive)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: cannot be loaded safely (torch.load with weights_only=True): {_load_failure(error)}",
            hint="the file is damaged, or holds Python objects that would need arbitrary code to unpickle "
                 "(refused: only tensors and plain containers load)",
        ) from error
    _check_layout(checkpoint, path)
    return checkpoint


def recorded_network(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The architecture a weights file of ours records (``{"type": ..., **constructor arguments}``),
    or None (BasicSR's files). Its values are plain; ranges are checked by the caller."""
    network = checkpoint.get("network")
    return dict(network) if isinstance(network, Mapping) else None


def _check_layout(checkpoint: Any, path: Path) -> None:
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{path}: expected a dict of weights, got {type(checkpoint).__name__}")
    if not all(isinstance(k, str) for k in checkpoint):
        raise CheckpointError(f"{path}: expected string keys at the top level, got {_preview(list(checkpoint))}")
    entries = [k for k in PARAM_KEYS if k in checkpoint]
    if not entries:  # a bare state dict: every value a tensor
        _check_tensors(checkpoint, f"{path}", top_level=True)
    for key in entries:
        _check_tensors(checkpoint[key], f"{path} [{key}]", top_level=False)
    network = checkpoint.get("network") if entries else None
    if network is not None:
        plain = (bool, int, float, str, type(None))
        if not isinstance(network, Mapping) or not all(
                isinstance(k, str) and isinstance(v, plain) for k, v in network.items()):
            raise CheckpointError(f"{path} [network]: expected the architecture as a mapping of names to plain "
                                  f"values, got {_short(network)}")


def _check_tensors(state_dict: Any, what: str, top_level: bool) -> None:
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{what}: expected a state dict, got {type(state_dict).__name__}")
    bad = [k for k, v in state_dict.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if not state_dict or bad:
        if top_level:
            raise CheckpointError(
                f"{what}: holds neither 'params' nor 'params_ema', and is not a state dict of "
                f"tensors; its top-level keys: {_preview(list(state_dict))}")
        detail = f"entry {_short(bad[0])} is a {type(state_dict[bad[0]]).__name__}" if bad else "it is empty"
        raise CheckpointError(f"{what}: expected a mapping of parameter names to tensors ({detail})")


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


def atomic_link(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Make ``path`` another name of the complete file ``source`` (a hard link, or a copy where
    the file system has none), replacing ``path`` atomically: e.g. ``net_g_latest.pth``."""
    source, path = Path(source), Path(path)
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        try:
            os.link(source, tmp_name)
        except OSError:
            shutil.copyfile(source, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        tmp_name.unlink(missing_ok=True)
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


def state_dict_of(checkpoint: Mapping[str, Any], path: Path, key: str = "auto") -> tuple[dict[str, Tensor], str]:
    """The state dict ``key`` selects in a checkpoint ``read_checkpoint`` returned, wrapper
    prefixes removed, and the key used ("params", "params_ema" or "state_dict")."""
    return _select_state_dict(checkpoint, path, key)


def _check_key(key: str) -> None:
    if key not in ("auto",) + PARAM_KEYS:
        raise ValueError(f"key: expected 'auto', 'params' or 'params_ema', got {key!r}")


def _select_state_dict(checkpoint: Mapping[str, Any], path: Path, key: str) -> tuple[dict[str, Tensor], str]:
    _check_key(key)
    has_entries = any(k in checkpoint for k in PARAM_KEYS)
    if key == "auto":
        key = next((k for k in ("params_ema", "params") if k in checkpoint), "state_dict")
    if key == "state_dict":
        state_dict = checkpoint
    elif key in checkpoint:
        state_dict = checkpoint[key]
    else:
        what = "has no" if has_entries else "is a bare state dict, without a"
        raise CheckpointError(f"{path}: {what} {key!r} entry; its top-level keys: {_preview(list(checkpoint))}")
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
    """One line: each kind of problem with its count and first keys."""
    parts = []
    for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            parts.append(f"{title} ({len(keys)}): {_preview(keys, limit=3)}")
    return "; ".join(parts)


def _preview(items: list, limit: int = 10) -> str:
    shown = ", ".join(_short(item, 100) for item in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _short(value: Any, limit: int = 80) -> str:
    """A value for a message, never longer than ``limit`` characters."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_failure(error: BaseException) -> str:
    """The telling line of a ``torch.load`` error: the refused global, else the first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    refused = next((line for line in lines if "Unsupported global" in line), None)
    return _short(refused or lines[0], 200)


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
