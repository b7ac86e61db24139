"""Typed validation of nested option mappings against dataclasses and constructor signatures.

One mechanism serves both kinds of section: a dataclass (fields with types, defaults,
limits and rules) and a registry entry ``{"type": Name, **constructor kwargs}`` whose keys
are checked against the constructor's signature and type hints, with the limits and rules
its ``Registry`` declares. Errors name the file (or the ``--set`` override that set the
value), the key path, what was expected and, for unknown keys, the closest valid key.
Every user value quoted in a message is shortened (``short``).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import reprlib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

MAX_VALUE_CHARS = 80  # a user value quoted in a message is cut to this many characters
MAX_KEY_PATH_CHARS = 200
MAX_MESSAGE_CHARS = 1000


class OptionsError(ValueError):
    """An option file (or override) does not fit the schema.

    ``source``: the file, or ``--set key=value`` for an override; ``key_path``: e.g.
    ``train.optim.lr`` ("" for the whole file); ``message``: what was expected and what was found.
    """

    def __init__(self, source: str, key_path: str, message: str):
        self.source = source
        self.key_path = clip(key_path, MAX_KEY_PATH_CHARS)
        self.message = clip(message, MAX_MESSAGE_CHARS)
        where = f"{source}: {self.key_path}" if self.key_path else source
        super().__init__(f"{where}: {self.message}")


def clip(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, ending in '...' when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ShortRepr(reprlib.Repr):
    """``reprlib`` with small limits; containers by their base type; huge integers described.

    (Python refuses to print an integer of more than 4300 digits.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxset, self.maxdict = 3, 6, 6, 6, 4
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr1(self, x: Any, level: int) -> str:
        for base in (dict, list, tuple, set, frozenset, str):
            if isinstance(x, base):
                return getattr(self, f"repr_{base.__name__}")(x, level)
        if isinstance(x, int) and not isinstance(x, bool):
            return self.repr_int(x, level)
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 1000:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(int(x), level)


def short(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A repr of ``value`` of at most ``limit`` characters, in bounded time and memory."""
    return clip(_ShortRepr().repr(value), limit)


@dataclass(frozen=True)
class Limits:
    """What a value accepts beyond its type (for a list: each item).

    Numbers: ``minimum``/``maximum`` (inclusive), ``above``/``below`` (exclusive);
    ``choices``: the allowed values (null is a matter of the type); ``pattern``: a regular
    expression a string must match entirely.
    """

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None

    def problem(self, value: Any) -> str | None:
        """'expected ..., got ...' when ``value`` (already of the right type) is outside the limits."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"expected one of {', '.join(short(c) for c in self.choices)}, got {short(value)}"
        if isinstance(value, str) and self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"expected a value matching {self.pattern}, got {short(value)}"
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if self.minimum is not None and value < self.minimum:
            return f"expected a value >= {number(self.minimum)}, got {short(value)}"
        if self.above is not None and value <= self.above:
            return f"expected a value > {number(self.above)}, got {short(value)}"
        if self.maximum is not None and value > self.maximum:
            return f"expected a value <= {number(self.maximum)}, got {short(value)}"
        if self.below is not None and value >= self.below:
            return f"expected a value < {number(self.below)}, got {short(value)}"
        return None

    def describe(self) -> str:
        """The limits as the docs show them: '[1, 1024]', '(0, 1]', 'one of `a`, `b`', ''."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(f"`{c}`" for c in self.choices))
        if self.pattern is not None:
            parts.append(f"matches `{self.pattern}`")
        low = f"[{number(self.minimum)}" if self.minimum is not None else (
            f"({number(self.above)}" if self.above is not None else "(-inf")
        high = f"{number(self.maximum)}]" if self.maximum is not None else (
            f"{number(self.below)})" if self.below is not None else "inf)")
        if (low, high) != ("(-inf", "inf)"):
            parts.append(f"{low}, {high}")
        return "; ".join(parts)

    def is_bounded(self) -> bool:
        """Whether a lower and an upper numeric bound are both set."""
        return (self.minimum is not None or self.above is not None) and (
            self.maximum is not None or self.below is not None)


def number(value: float) -> str:
    """A bound as written in messages and docs: 1024, 0.5, 1e-12."""
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:g}"


@dataclass(frozen=True)
class Problem:
    """A rule's finding: ``key`` (relative to the checked section) is wrong, ``message`` says how;
    ``involves``: the other keys the rule read (an override of any of them is named in the error)."""

    key: str
    message: str
    involves: tuple[str, ...] = ()


Rule = Callable[[Any], "Problem | None"]
"""A cross-field check of a parsed section (a dataclass instance, or the ``Spec`` of a registry
section); its docstring's first line documents it in docs/options.md."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: Any
    required: bool
    default: Any = None
    doc: str = ""
    limits: Limits = Limits()


@dataclass
class Spec:
    """A validated registry section: ``type`` names the class in ``registry``, ``kwargs`` its arguments."""

    type: str
    kwargs: dict[str, Any]
    registry: Mapping[str, Callable] = field(default_factory=dict, repr=False, compare=False)

    def build(self, **extra: Any) -> Any:
        """The object: ``registry[type](**kwargs, **extra)``."""
        return self.registry[self.type](**self.kwargs, **extra)


class Registry:
    """Marks a field whose value is ``{"type": name, ...kwargs}`` for one of ``classes``.

    Use as ``Annotated[Spec, Registry({...})]`` in a dataclass; ``exclude`` lists
    constructor parameters that options may not set (the caller passes them);
    ``limits``: constructor argument name -> its ``Limits`` (for every class that has that
    argument); ``rules``: cross-field checks of the parsed ``Spec``.
    """

    def __init__(self, classes: Mapping[str, Callable], exclude: Sequence[str] = (),
                 limits: Mapping[str, Limits] | None = None, rules: Sequence[Rule] = ()):
        self.classes = classes
        self.exclude = tuple(exclude)
        self.limits = dict(limits or {})
        self.rules = tuple(rules)

    def fields(self, name: str) -> list[FieldSpec]:
        """The option keys of class ``name``: its constructor arguments with their limits."""
        return signature_fields(self.classes[name], self.exclude, self.limits)


def option(default: Any = dataclasses.MISSING, doc: str = "", minimum: float | None = None,
           maximum: float | None = None, above: float | None = None, below: float | None = None,
           pattern: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with documentation and ``Limits`` (bounds apply to each item of a list)."""
    metadata = {"doc": doc, "limits": Limits(minimum, maximum, above, below, pattern=pattern)}
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
                               f.metadata.get("limits", Limits())))
    return specs


def signature_fields(fn: Callable, exclude: Sequence[str] = (),
                     limits: Mapping[str, Limits] | None = None) -> list[FieldSpec]:
    """The keyword parameters of ``fn`` (a class: its ``__init__``) as fields, with ``limits`` by name."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    hints = typing.get_type_hints(target)
    limits = limits or {}
    specs = []
    for name, param in inspect.signature(target).parameters.items():
        if name == "self" or name in exclude or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        required = param.default is inspect.Parameter.empty
        specs.append(FieldSpec(name, hints.get(name, Any), required, None if required else param.default,
                               limits=limits.get(name, Limits())))
    return specs


class Validator:
    """Parses raw YAML data into typed values.

    ``source`` names the file in errors; ``overrides``: (key path, label) of every value a
    ``--set`` wrote, in order. An error about a key path that an override wrote (or lies
    inside one), or a rule that read such a key, names that override's label instead.
    """

    def __init__(self, source: str, overrides: Sequence[tuple[str, str]] = ()):
        self.source = source
        self.overrides = tuple(overrides)

    def error(self, path: str, message: str, involves: Sequence[str] = ()) -> OptionsError:
        return OptionsError(self.source_of((path, *involves)), path, message)

    def source_of(self, paths: Sequence[str]) -> str:
        """The label of the last override that wrote one of ``paths`` (or a section holding it), else the file."""
        for path in paths:
            for written, label in reversed(self.overrides):
                if path == written or path.startswith((written + ".", written + "[")):
                    return label
        return self.source

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
            instance = tp(**self.parse_fields(dataclass_fields(tp), value, path, type_name=tp.__name__))
            self.check_rules(getattr(tp, "RULES", ()), instance, path)
            return instance
        if origin in (Union, types.UnionType):
            return self.parse_union(args, value, path)
        if origin is Literal:
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                raise self.error(path, f"expected one of {choices}, got {short(value)}{self.closest(value, args)}")
            return value
        if origin in (list, tuple) or origin in (Sequence, typing.Sequence) or tp in (list, tuple):
            return self.parse_sequence(tp, origin or tp, args, value, path)
        if origin is dict or origin in (Mapping, typing.Mapping):
            return self.parse_mapping(args, value, path)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.error(path, f"expected true or false, got {short(value)}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.error(path, f"expected an integer, got {short(value)}")
            return value
        if tp is float:
            return self.parse_float(value, path)
        if tp is str or tp is os.PathLike:
            if not isinstance(value, str):
                raise self.error(path, f"expected a string, got {short(value)}")
            return value
        if tp is type(None):
            if value is not None:
                raise self.error(path, f"expected null, got {short(value)}")
            return None
        raise self.error(path, f"the schema has an unsupported type {tp!r} (a bug in vidrestore)")

    def parse_float(self, value: Any, path: str) -> float:
        if isinstance(value, bool):
            raise self.error(path, f"expected a number, got {short(value)}")
        result = None
        if isinstance(value, (int, float)):
            try:
                result = float(value)
            except OverflowError:  # an integer beyond the float range
                result = math.inf
        elif isinstance(value, str):  # YAML 1.1 reads 4e-4 (no dot) as a string
            try:
                result = float(value)
            except ValueError:
                pass
        if result is None:
            raise self.error(path, f"expected a number, got {short(value)}")
        if not math.isfinite(result):
            raise self.error(path, f"expected a finite number, got {short(value)}")
        return result

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
        raise self.error(path, f"expected {describe_type(union)}, got {short(value)}")

    def parse_sequence(self, tp: Any, origin: Any, args: tuple, value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise self.error(path, f"expected a list, got {short(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise self.error(path, f"expected a list of {len(args)} values, got {len(value)}: {short(value)}")
            return tuple(self.parse(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item_type = args[0] if args else Any
        items = [self.parse(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items

    def parse_mapping(self, args: tuple, value: Any, path: str) -> dict:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping, got {short(value)}")
        key_type, value_type = args if args else (Any, Any)
        return {self.parse(key_type, k, join(path, k)): self.parse(value_type, v, join(path, k))
                for k, v in value.items()}

    def parse_registry(self, registry: Registry, value: Any, path: str) -> Spec:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping with a 'type' key, got {short(value)}")
        names = list(registry.classes)
        type_path = join(path, "type")
        if "type" not in value:
            raise self.error(type_path, f"missing required key (one of {', '.join(names)})")
        name = value["type"]
        if not isinstance(name, str) or name not in registry.classes:
            raise self.error(type_path, f"unknown type {short(name)}; expected one of "
                             f"{', '.join(names)}{self.closest(name, names)}")
        kwargs = {k: v for k, v in value.items() if k != "type"}
        # which keys are known or required depends on the type: an override of it is named
        spec = Spec(name, self.parse_fields(registry.fields(name), kwargs, path, name, involves=(type_path,)),
                    registry.classes)
        self.check_rules(registry.rules, spec, path)
        return spec

    def parse_fields(self, fields: list[FieldSpec], value: Any, path: str, type_name: str,
                     involves: Sequence[str] = ()) -> dict:
        if not isinstance(value, Mapping):
            raise self.error(path, f"expected a mapping ({type_name}), got {short(value)}")
        by_name = {f.name: f for f in fields}
        for key in value:
            if key not in by_name:
                raise self.error(join(path, key), f"unknown key for {type_name}{self.closest(key, list(by_name))}; "
                                 f"valid keys: {', '.join(by_name)}", involves)
        parsed = {}
        for f in fields:
            key_path = join(path, f.name)
            if f.name not in value:
                if f.required:
                    raise self.error(key_path, f"missing required key (expected {describe_type(f.type)})", involves)
                parsed[f.name] = f.default
                continue
            parsed[f.name] = self.parse(f.type, value[f.name], key_path)
            self.check_limits(f.limits, parsed[f.name], key_path)
        return parsed

    def check_limits(self, limits: Limits, value: Any, path: str) -> None:
        """``value`` (or each item of a list) within ``limits``."""
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check_limits(limits, item, f"{path}[{i}]")
            return
        problem = limits.problem(value)
        if problem is not None:
            raise self.error(path, problem)

    def check_rules(self, rules: Sequence[Rule], section: Any, path: str) -> None:
        """Each rule on the parsed ``section``; the first problem is raised, naming its key under ``path``."""
        for rule in rules:
            problem = rule(section)
            if problem is not None:
                raise self.error(_under(path, problem.key), problem.message,
                                 [_under(path, key) for key in problem.involves])

    @staticmethod
    def closest(word: Any, choices: Sequence[Any]) -> str:
        if not isinstance(word, str) or len(word) > 100:  # a long text resembles no key (and is slow to compare)
            return ""
        matches = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
        return f" (did you mean {matches[0]!r}?)" if matches else ""


def join(path: str, key: Any) -> str:
    """``path.key`` as errors spell key paths (a long or odd key shortened)."""
    text = key if isinstance(key, str) and len(key) <= 40 else short(key, 40)
    return f"{path}.{text}" if path else text


def _under(path: str, relative: str) -> str:
    """A rule's key path (relative to its section, written by us, never shortened) under ``path``."""
    return f"{path}.{relative}" if path else relative


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
