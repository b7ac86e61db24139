"""Option files: ``load(path, overrides)`` -> typed, validated ``Options``.

    opts = load("options/train/edvr_m_reds.yml", ["train.optim.lr=2e-4"])

YAML is read with a safe loader that also refuses duplicate keys and files that are too big
or expand too much through aliases (``options/yamlfile.py``); every key is checked against
the schema (``options/schema.py``): its type, its range and the rules between keys. An
unknown key names the file, the key path and the closest valid key; a wrong value names the
key path, what was expected and what was found. Overrides ``a.b.c=value`` (value in YAML
syntax; list items by index, ``datasets.val.0.name=X``) may only set keys that the schema
knows; an error about a value an override set names the override, not the file.
``parse_network(data, source)`` validates a network section alone (e.g. a weights file's
metadata). ``dump(opts)`` gives the resolved options as YAML (saved into each experiment).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .parse import OptionsError, Spec, Validator, clip, join, short
from .yamlfile import MAX_TEXT_CHARS, read_yaml

if TYPE_CHECKING:
    from .schema import Options

__all__ = ["Options", "OptionsError", "Spec", "dump", "load", "load_text", "parse_network", "to_plain"]

def load(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Options:
    """Read, override and validate an option file."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TEXT_CHARS + 1)  # never more than the limit, whatever the file is
    except OSError as error:
        raise OptionsError(str(path), "", f"cannot read the option file ({error.strerror or error})") from error
    if len(raw) > MAX_TEXT_CHARS:
        raise OptionsError(str(path), "", f"expected an option file of at most {MAX_TEXT_CHARS} bytes, got more: "
                                          "an option file is a few KB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise OptionsError(str(path), "", f"not UTF-8 text (byte {error.start}): save the file as UTF-8") from error
    return load_text(text, str(path), overrides)


def load_text(text: str, source: str = "<string>", overrides: Sequence[str] = ()) -> Options:
    """Validate option YAML given as text; ``source`` names it in errors."""
    data = read_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OptionsError(source, "", f"expected a mapping of option keys at the top level, got {type(data).__name__}")
    written = []
    for override in overrides:
        label = f"--set {clip(override)}"
        written += [(path, label) for path in apply_override(data, override, label)]
    from .schema import Options  # the schema imports the networks and datasets: only when needed

    try:
        return Validator(source, written).parse(Options, data, "")
    except RecursionError as error:
        raise OptionsError(source, "", "options nested too deeply") from error


def parse_network(data: Mapping[str, Any], source: str) -> Spec:
    """Validate a network section ``{"type": "EDVR", **kwargs}`` given as a mapping (e.g. the
    metadata of a weights file) exactly as an option file's ``network`` section: same types,
    ranges and rules, unknown keys refused. Builds nothing. Errors (``OptionsError``) name
    ``source`` and the key as in an option file (``network.num_feat``)."""
    from .schema import Network

    return Validator(source).parse(Network, data, "network")


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


def apply_override(data: dict, override: str, label: str) -> list[str]:
    """Set ``key.path=value`` in ``data``; returns the key paths it wrote (as errors spell them):
    the key and each section it had to create. ``label`` names the override in errors."""
    key_path, sep, text = override.partition("=")
    if not sep or not key_path.strip():
        raise OptionsError(label, "", "expected --set key.path=value")
    keys = key_path.strip().split(".")
    node: Any = data
    path, written = "", []
    for key in keys[:-1]:
        index, path = _locate(node, key, path, label)
        if isinstance(node, dict) and node.get(index) is None:
            node[index] = {}
            written.append(path)
        child = node[index]
        if not isinstance(child, (dict, list)):
            raise OptionsError(label, path, f"cannot set a key inside {short(child)}")
        child = copy.copy(child)  # the file may share this section with another through an alias
        node[index] = child
        node = child
    index, path = _locate(node, keys[-1], path, label)
    node[index] = read_yaml(text, label, path)
    return written + [path]


def _locate(node: dict | list, key: str, path: str, label: str) -> tuple[Any, str]:
    """``key`` as an index of ``node`` (a mapping key, or a list position; negative counts from the
    end) and the key path it has in errors."""
    if isinstance(node, dict):
        return key, join(path, key)
    try:
        index = int(key)
    except ValueError:
        index = None
    if index is None or not -len(node) <= index < len(node):
        raise OptionsError(label, join(path, key), f"expected a list index in [0, {len(node)}), got {short(key)}")
    index %= len(node)
    return index, f"{path}[{index}]"
