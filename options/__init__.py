"""Option files: ``load(path, overrides)`` -> typed, validated ``Options``.

    opts = load("options/train/edvr_m_reds.yml", ["train.optim.lr=2e-4"])

YAML is read with ``yaml.safe_load``; every key is checked against the schema
(``options/schema.py``): an unknown key names the file, the key path and the closest
valid key; a wrong type or a missing required key names the key path and the
expected type. Overrides ``a.b.c=value`` (value in YAML syntax; list items by
index, ``datasets.val.0.name=X``) may only set keys that the schema knows.
``dump(opts)`` gives the resolved options as YAML (saved into each experiment).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .parse import OptionsError, Spec, Validator

if TYPE_CHECKING:
    from .schema import Options

__all__ = ["Options", "OptionsError", "Spec", "dump", "load", "load_text", "to_plain"]


def load(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Options:
    """Read, override and validate an option file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise OptionsError(str(path), "", f"cannot read the option file ({error.strerror or error})") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OptionsError(str(path), "", f"not UTF-8 text (byte {error.start}): save the file as UTF-8") from error
    return load_text(text, str(path), overrides)


def load_text(text: str, source: str = "<string>", overrides: list[str] | tuple[str, ...] = ()) -> Options:
    """Validate option YAML given as text; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise OptionsError(source, "", f"invalid YAML{where}: {problem}") from error
    except RecursionError as error:
        raise OptionsError(source, "", "invalid YAML: nested too deeply") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OptionsError(source, "", f"expected a mapping of option keys at the top level, got {type(data).__name__}")
    for override in overrides:
        _apply_override(data, override, source)
    from .schema import Options  # the schema imports the networks and datasets: only when needed

    try:
        return Validator(source).parse(Options, data, "")
    except RecursionError as error:
        raise OptionsError(source, "", "options nested too deeply") from error


def to_plain(value: Any) -> Any:
    """Options -> plain dicts/lists (registry sections as ``{"type": ..., **kwargs}``)."""
    if isinstance(value, Spec):
        return {"type": value.type, **{k: to_plain(v) for k, v in value.kwargs.items()}}
    if dataclasses.is_dataclass(value):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def __getattr__(name: str) -> Any:
    if name == "Options":  # imported on first use, so that ``options.cli`` stays light
        from .schema import Options

        return Options
    raise AttributeError(f"module 'options' has no attribute {name!r}")


def dump(options: Options) -> str:
    """The resolved options as YAML; ``load_text(dump(o))`` gives ``o`` back."""
    return yaml.safe_dump(to_plain(options), sort_keys=False, allow_unicode=True)


def _apply_override(data: dict, override: str, source: str) -> None:
    key_path, sep, text = override.partition("=")
    label = f"{source} (--set {override})"
    if not sep or not key_path.strip():
        raise OptionsError(label, "", "expected --set key.path=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise OptionsError(label, key_path, f"the value is not valid YAML ({error})") from error
    keys = key_path.strip().split(".")
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        node = _child(node, key, keys[: depth + 1], label)
    last = keys[-1]
    if isinstance(node, list):
        index = _index(node, last, key_path, label)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value  # the validator refuses keys the schema does not know
    else:
        raise OptionsError(label, key_path, f"cannot set a key inside {node!r}")


def _child(node: Any, key: str, path: list[str], label: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, ".".join(path), label)]
    if not isinstance(node, dict):
        raise OptionsError(label, ".".join(path), f"cannot set a key inside {node!r}")
    if node.get(key) is None:
        node[key] = {}
    return node[key]


def _index(node: list, key: str, path: str, label: str) -> int:
    if not key.lstrip("-").isdigit() or not -len(node) <= int(key) < len(node):
        raise OptionsError(label, path, f"expected a list index in [0, {len(node)}), got {key!r}")
    return int(key)
