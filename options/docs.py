"""Generate docs/options.md from the schema: ``python -m options.docs [--check]``.

Every key of every section is listed with its type, default, range and meaning, and the
rules between keys after each table; sections that construct something (network,
datasets) list each registered class's constructor arguments. ``--check`` exits non-zero
when docs/options.md is stale.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import typing
from pathlib import Path

from .parse import FieldSpec, Registry, Rule, dataclass_fields, describe_type
from .schema import Options
from .yamlfile import MAX_EXPANDED_SIZE, MAX_TEXT_CHARS

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "options.md"

HEADER = f"""# Options

Generated from `options/schema.py` by `python -m options.docs`; a test keeps it in sync.
Option files are YAML, read with a safe loader (no Python tags) that also refuses a key
repeated in one mapping (naming both lines), files over {MAX_TEXT_CHARS:,} bytes, and
documents that would expand through aliases (`*name`) to more than {MAX_EXPANDED_SIZE:,} nodes
and characters. Unknown keys, wrong types, missing required keys, values outside their range and
broken rules between keys are errors that name the file, the key path, what was expected and
what was found. Override any key from the command line with `--set key.path=value` (the value
in YAML syntax; list items by index, e.g. `--set datasets.val.0.name=REDS4`); an error about
a value an override set names the override instead of the file. Numbers such as `4e-4`, which
YAML 1.1 reads as strings, are accepted for number keys. Ranges: `[a, b]` includes a and b,
`(a, b)` excludes them; a list's range is that of each item. **Batch sizes are per process
(per GPU):** the global batch is `batch_size_per_gpu` times the number of processes.
"""


def render() -> str:
    lines = [HEADER]
    registries: dict[str, Registry] = {}
    _render_dataclass(Options, "", lines, registries)
    for title, registry in registries.items():
        lines.append(f"\n## `{title}` types")
        lines += _rules(registry.rules)
        for name, cls in registry.classes.items():
            summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"\n### `type: {name}`\n\n{summary}\n")
            lines.append("| key | type | default | range |\n|---|---|---|---|")
            for f in registry.fields(name):
                lines.append(f"| `{f.name}` | {_escape(describe_type(f.type))} | {_default(f)} | "
                             f"{_escape(f.limits.describe())} |")
    return "\n".join(lines) + "\n"


def _render_dataclass(cls: type, prefix: str, lines: list[str], registries: dict) -> None:
    nested = []
    title = prefix or "top level"
    lines.append(f"\n## `{title}`\n")
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(cls.__name__ + "("):
        lines.append(doc.split("\n\n")[0].replace("\n", " ") + "\n")
    lines.append("| key | type | default | range | meaning |\n|---|---|---|---|---|")
    for f in dataclass_fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        target = _dataclass_in(f.type)
        registry = _registry_in(f.type)
        default = "see below" if target is not None and dataclasses.is_dataclass(f.default) else _default(f)
        lines.append(f"| `{path}` | {_escape(describe_type(f.type))} | {default} | "
                     f"{_escape(f.limits.describe())} | {_escape(f.doc)} |")
        if target is not None:
            nested.append((target, path))
        if registry is not None:
            registries.setdefault(path.split(".")[-1] if "." in path else path, registry)
    lines += _rules(getattr(cls, "RULES", ()))
    for target, path in nested:
        _render_dataclass(target, path + ("[]" if _is_list(path, cls) else ""), lines, registries)


def _default(f: FieldSpec) -> str:
    return "**required**" if f.required else f"`{_yaml(f.default)}`"


def _rules(rules: tuple[Rule, ...]) -> list[str]:
    """A bullet per rule: the first paragraph of its docstring (keys relative to the section)."""
    if not rules:
        return []
    return ["\nRules:\n"] + [f"- {inspect.getdoc(rule).split(chr(10) * 2)[0].replace(chr(10), ' ')}" for rule in rules]


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
