"""Typed validation of nested option mappings against dataclasses and constructor signatures.

One mechanism serves both kinds of section: a dataclass (fields with types,
defaults and metadata) and a registry entry ``{"type": Name, **constructor kwargs}``
whose keys are checked against the constructor's signature and type hints. Errors
name the file, the key path, what was expected and, for unknown keys, the closest
valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union


class OptionsError(ValueError):
    """An option file (or override) does not fit the schema."""

    def __init__(self, source: str, key_path: str, message: str):
        self.source, self.key_path, self.message = source, key_path, message
        where = f"{source}: {key_path}" if key_path else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: Any
    required: bool
    default: Any = None
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None  # a string value must match this regular expression entirely


@dataclass
class Spec:
    """A validated registry section: ``type`` names the class, ``kwargs`` its arguments."""

    type: str
    kwargs: dict[str, Any]

    def build(self, registry: Mapping[str, Callable], **extra: Any) -> Any:
        return registry[self.type](**self.kwargs, **extra)


class Registry:
    """Marks a field whose value is ``{"type": name, ...kwargs}`` for one of ``classes``.

    Use as ``Annotated[Spec, Registry({...})]`` in a dataclass; ``exclude`` lists
    constructor parameters that options may not set (the caller passes them).
    """

    def __init__(self, classes: Mapping[str, Callable], exclude: Sequence[str] = ()):
        self.classes = classes
        self.exclude = tuple(exclude)


def option(default: Any = dataclasses.MISSING, doc: str = "", minimum: float | None = None,
           maximum: float | None = None, pattern: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with documentation, numeric bounds and a string pattern for the validator."""
    metadata = {"doc": doc, "minimum": minimum, "maximum": maximum, "pattern": pattern}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def dataclass_fields(cls: type) -> list[FieldSpec]:
    hints = typing.get_type_hints(cls, include_extras=True)
    specs = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            required, default = False, f.default
        elif f.default_factory is not dataclasses.MISSING:
            required, default = False, f.default_factory()
        else:
            required, default = True, None
        specs.append(FieldSpec(f.name, hints[f.name], required, default, f.metadata.get("doc", ""),
                               f.metadata.get("minimum"), f.metadata.get("maximum"), f.metadata.get("pattern")))
    return specs


def signature_fields(fn: Callable, exclude: Sequence[str] = ()) -> list[FieldSpec]:
    """The keyword parameters of ``fn`` (a class: its ``__init__``) as fields."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    hints = typing.get_type_hints(target)
    specs = []
    for name, param in inspect.signature(target).parameters.items():
        if name == "self" or name in exclude or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        required = param.default is inspect.Parameter.empty
        specs.append(FieldSpec(name, hints.get(name, Any), required, None if required else param.default))
    return specs


class Validator:
    """Parses raw YAML data into typed values; ``source`` names the file in errors."""

    def __init__(self, source: str):
        self.source = source

    def error(self, path: str, message: str) -> OptionsError:
        return OptionsError(self.source, path, message)

    def parse(self, tp: Any, value: Any, path: str) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            registry = next((a for a in args[1:] if isinstance(a, Registry)), None)
            if registry is not None:
                return self.parse_registry(registry, value, path)
            return self.parse(args[0], value, path)
        if tp is Any:
            return value
        if dataclasses.is_dataclass(tp):
            return tp(**self.parse_fields(dataclass_fields(tp), value, path, type_name=tp.__name__))
        if origin in (Union, types.UnionType):
            return self.parse_union(args, value, path)
        if origin is Literal:
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                raise self.error(path, f"expected one of {choices}, got {value!r}{self.closest(value, args)}")
            return value
        if origin in (list, tuple) or origin in (Sequence, typing.Sequence) or tp in (list, tuple):
            return self.parse_sequence(tp, origin or tp, args, value, path)
        if origin is dict or origin in (Mapping, typing.Mapping):
            return self.parse_mapping(args, value, path)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.error(path, f"expected true or false, got {value!r}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, f"expected an integer, got {value!r}")
            return value
        if tp is float:
            return self.parse_float(value, path)
        if tp is str or tp is os.PathLike:
            if not isinstance(value, str):
                raise self.error(path, f"expected a string, got {value!r}")
            return value
        if tp is type(None):
            if value is not None:
                raise self.error(path, f"expected null, got {value!r}")
            return None
        raise self.error(path, f"the schema has an unsupported type {tp!r} (a bug in vidrestore)")

    def parse_float(self, value: Any, path: str) -> float:
        if isinstance(value, bool):
            raise self.error(path, f"expected a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 4e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise self.error(path, f"expected a number, got {value!r}")
        if not math.isfinite(number):
            raise self.error(path, f"expected a finite number, got {value!r}")
        return number

    def parse_union(self, args: tuple, value: Any, path: str) -> Any:
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        # Only members of the value's kind can match; with one left, its own (deeper) error stands.
        candidates = [a for a in members if _kind(a) == _kind_of_value(value)] or members
        if len(candidates) == 1:
            return self.parse(candidates[0], value, path)
        for member in candidates:
            try:
                return self.parse(member, value, path)
            except OptionsError:
                continue
        union = typing.Union[args]  # noqa: UP007 (a runtime union of the given members)
        raise self.error(path, f"expected {describe_type(union)}, got {value!r}")

    def parse_sequence(self, tp: Any, origin: Any, args: tuple, value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise self.error(path, f"expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise self.error(path, f"expected a list of {len(args)} values, got {len(value)}: {value!r}")
            return tuple(self.parse(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_type = args[0] if args else Any
        items = [self.parse(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items

    def parse_mapping(self, args: tuple, value: Any, path: str) -> dict:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {self.parse(key_type, k, f"{path}.{k}"): self.parse(value_type, v, f"{path}.{k}")
                for k, v in value.items()}

    def parse_registry(self, registry: Registry, value: Any, path: str) -> Spec:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping with a 'type' key, got {value!r}")
        names = list(registry.classes)
        if "type" not in value:
            raise self.error(f"{path}.type", f"missing required key (one of {', '.join(names)})")
        name = value["type"]
        if not isinstance(name, str) or name not in registry.classes:
            raise self.error(f"{path}.type", f"unknown type {name!r}; expected one of "
                             f"{', '.join(names)}{self.closest(name, names)}")
        fields = signature_fields(registry.classes[name], registry.exclude)
        kwargs = {k: v for k, v in value.items() if k != "type"}
        return Spec(name, self.parse_fields(fields, kwargs, path, type_name=name))

    def parse_fields(self, fields: list[FieldSpec], value: Any, path: str, type_name: str) -> dict:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping ({type_name}), got {value!r}")
        by_name = {f.name: f for f in fields}
        for key in value:
            if key not in by_name:
                raise self.error(_join(path, str(key)), f"unknown key for {type_name}"
                                 f"{self.closest(key, list(by_name))}; valid keys: {', '.join(by_name)}")
        parsed = {}
        for f in fields:
            key_path = _join(path, f.name)
            if f.name not in value:
                if f.required:
                    raise self.error(key_path, f"missing required key (expected {describe_type(f.type)})")
                parsed[f.name] = f.default
                continue
            parsed[f.name] = self.parse(f.type, value[f.name], key_path)
            self.check_bounds(f, parsed[f.name], key_path)
        return parsed

    def check_bounds(self, f: FieldSpec, value: Any, path: str) -> None:
        if isinstance(value, str) and f.pattern is not None and not re.fullmatch(f.pattern, value):
            raise self.error(path, f"expected a value matching {f.pattern}, got {value!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if f.minimum is not None and value < f.minimum:
            raise self.error(path, f"expected a value >= {f.minimum:g}, got {value!r}")
        if f.maximum is not None and value > f.maximum:
            raise self.error(path, f"expected a value <= {f.maximum:g}, got {value!r}")

    @staticmethod
    def closest(word: Any, choices: Sequence[Any]) -> str:
        matches = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
        return f" (did you mean {matches[0]!r}?)" if matches else ""


def describe_type(tp: Any) -> str:
    """A short human name for a type hint: 'int', 'list of int', 'str or null', ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        registry = next((a for a in args[1:] if isinstance(a, Registry)), None)
        return f"mapping with type: {' | '.join(registry.classes)}" if registry else describe_type(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence, typing.Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"list of {len(args)}: " + ", ".join(describe_type(a) for a in args)
        return f"list of {describe_type(args[0])}" if args else "list"
    if origin in (dict, Mapping, typing.Mapping):
        return f"mapping {describe_type(args[0])} -> {describe_type(args[1])}" if args else "mapping"
    if dataclasses.is_dataclass(tp):
        return f"mapping ({tp.__name__})"
    if tp is os.PathLike:
        return "path"
    return getattr(tp, "__name__", str(tp))


def _kind(tp: Any) -> str:
    """'mapping', 'list' or 'scalar': what YAML value a type hint accepts."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return "mapping" if any(isinstance(a, Registry) for a in typing.get_args(tp)[1:]) else _kind(
            typing.get_args(tp)[0])
    if dataclasses.is_dataclass(tp) or origin in (dict, Mapping, typing.Mapping):
        return "mapping"
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        return "list"
    return "scalar"


def _kind_of_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return "mapping"
    return "list" if isinstance(value, (list, tuple)) else "scalar"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
