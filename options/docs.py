"""Generate docs/options.md from the schema: ``python -m options.docs [--check]``.

Every key of every section is listed with its type, default and meaning; sections
that construct something (network, datasets) list each registered class's
constructor arguments. ``--check`` exits non-zero when docs/options.md is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import typing
from pathlib import Path

from .parse import Registry, dataclass_fields, describe_type, signature_fields
from .schema import Options

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "options.md"

HEADER = """# Options

Generated from `options/schema.py` by `python -m options.docs`; a test keeps it in sync.
Option files are YAML (read with `yaml.safe_load`). Unknown keys, wrong types and missing
required keys are errors that name the file and the key path. Override any key from the
command line with `--set key.path=value` (the value in YAML syntax; list items by index,
e.g. `--set datasets.val.0.name=REDS4`). Numbers such as `4e-4`, which YAML 1.1 reads as
strings, are accepted for number keys. **Batch sizes are per process (per GPU):** the
global batch is `batch_size_per_gpu` times the number of processes.
"""


def render() -> str:
    lines = [HEADER]
    registries: dict[str, Registry] = {}
    _render_dataclass(Options, "", lines, registries)
    for title, registry in registries.items():
        lines.append(f"\n## `{title}` types\n")
        for name, cls in registry.classes.items():
            summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"\n### `type: {name}`\n\n{summary}\n")
            lines.append("| key | type | default |\n|---|---|---|")
            for f in signature_fields(cls, registry.exclude):
                default = "**required**" if f.required else f"`{_yaml(f.default)}`"
                lines.append(f"| `{f.name}` | {_escape(describe_type(f.type))} | {default} |")
    return "\n".join(lines) + "\n"


def _render_dataclass(cls: type, prefix: str, lines: list[str], registries: dict) -> None:
    nested = []
    title = prefix or "top level"
    lines.append(f"\n## `{title}`\n")
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(cls.__name__ + "("):
        lines.append(doc.split("\n\n")[0].replace("\n", " ") + "\n")
    lines.append("| key | type | default | meaning |\n|---|---|---|---|")
    for f in dataclass_fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        target = _dataclass_in(f.type)
        registry = _registry_in(f.type)
        if f.required:
            default = "**required**"
        elif target is not None and dataclasses.is_dataclass(f.default):
            default = "see below"
        else:
            default = f"`{_yaml(f.default)}`"
        lines.append(f"| `{path}` | {_escape(describe_type(f.type))} | {default} | {_escape(f.doc)} |")
        if target is not None:
            nested.append((target, path))
        if registry is not None:
            registries.setdefault(path.split(".")[-1] if "." in path else path, registry)
    for target, path in nested:
        _render_dataclass(target, path + ("[]" if _is_list(path, cls) else ""), lines, registries)


def _dataclass_in(tp) -> type | None:
    """The dataclass a field holds (directly, optionally, in a list or as dict values)."""
    if _registry_in(tp) is not None:
        return None  # a registry section: documented by its classes' signatures
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def _registry_in(tp) -> Registry | None:
    if typing.get_origin(tp) is typing.Annotated:
        return next((a for a in typing.get_args(tp)[1:] if isinstance(a, Registry)), None)
    for arg in typing.get_args(tp):
        found = _registry_in(arg)
        if found is not None:
            return found
    return None


def _is_list(path: str, cls: type) -> bool:
    hint = typing.get_type_hints(cls)[path.split(".")[-1]]
    return typing.get_origin(hint) is list


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v) if not dataclasses.is_dataclass(v) else '{...}'}"
                               for k, v in value.items()) + "}"
    return str(value)


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if docs/options.md is not up to date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC_PATH.is_file() or DOC_PATH.read_text() != text:
            sys.exit(f"{DOC_PATH} is stale: run python -m options.docs")
        return
    DOC_PATH.write_text(text)
    print(f"wrote {DOC_PATH}")


if __name__ == "__main__":
    main()
