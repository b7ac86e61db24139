"""Reading option YAML with limits: safe tags only, no duplicate keys, bounded alias expansion.

``yaml.safe_load`` shares aliased objects, so a tiny file of nested aliases ("billion
laughs") loads at once but expands to gigabytes as soon as anything walks it (validation,
a message quoting the value, ``dump``). ``read_yaml`` measures the expanded size on the node
graph, once per node (a shared node's size is reused, so nothing is expanded), and refuses a
document above ``MAX_EXPANDED_SIZE`` before constructing it. A mapping that holds a key twice
is refused with both line numbers (YAML merge keys ``<<`` still override as they should).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .parse import OptionsError, clip, join

MAX_TEXT_CHARS = 1 << 20  # 1 MiB (an option file is a few KB): characters of text, bytes of a file
MAX_EXPANDED_SIZE = 1 << 22  # nodes plus scalar characters, an aliased node counted at every use
MERGE_TAG = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose constructors raise YAML errors only: a date such as 2020-13-45 or
    an integer too long for Python is a ConstructorError with its line, not a ValueError."""

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            raise ConstructorError(None, None, f"cannot read this value ({clip(str(error), 100)})",
                                   node.start_mark) from error


def read_yaml(text: str, source: str, path: str = "") -> Any:
    """The data of YAML ``text`` (None when empty); every problem is an ``OptionsError`` naming
    ``source``; ``path``: the key path of the text's root (for an override's value)."""
    if len(text) > MAX_TEXT_CHARS:
        raise OptionsError(source, path, f"expected at most {MAX_TEXT_CHARS} characters of YAML, got "
                                         f"{len(text)}: an option file is a few KB")
    try:
        return _load(text, source, path)
    except yaml.YAMLError as error:
        raise OptionsError(source, path, describe_yaml_error(error)) from error
    except RecursionError as error:
        raise OptionsError(source, path, "invalid YAML: nested too deeply") from error


def _load(text: str, source: str, path: str) -> Any:
    loader = StrictLoader(text)  # refuses control characters at once
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        TreeCheck(loader, source).size(root, path)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error)
    return f"invalid YAML{where}: {clip(problem, 200)}"


class TreeCheck:
    """Walks a composed YAML node graph once per node: expanded size, cycles, duplicate keys."""

    def __init__(self, loader: StrictLoader, source: str):
        self.loader, self.source = loader, source
        self.sizes: dict[int, int] = {}  # id(node) -> expanded size
        self.open: set[int] = set()  # nodes being measured: meeting one of them again is a cycle

    def size(self, node: Node, path: str) -> int:
        """The size of ``node`` with every alias written out: 1 per node plus each scalar's length."""
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.open:
            raise OptionsError(self.source, path, f"an alias refers to the node of line {node.start_mark.line + 1} "
                                                  "from inside it: recursive structures are not options")
        self.open.add(key)
        if isinstance(node, ScalarNode):
            total = 1 + len(node.value)
        elif isinstance(node, SequenceNode):
            total = 1 + sum(self.size(item, f"{path}[{i}]") for i, item in enumerate(node.value))
        else:
            total = 1 + sum(self.size(k, path) + self.size(v, self.child_path(path, k))
                            for k, v in self.entries(node, path))
        self.open.discard(key)
        if total > MAX_EXPANDED_SIZE:
            raise OptionsError(self.source, path, f"expected YAML that expands to at most {MAX_EXPANDED_SIZE} "
                                                  "nodes and characters, got more: aliases (*name) repeat "
                                                  "their anchor's content at every use")
        self.sizes[key] = total
        return total

    def entries(self, node: MappingNode, path: str) -> list[tuple[Node, Node]]:
        """The (key, value) nodes of a mapping, after refusing a key that appears twice."""
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = self.loader.construct_object(key_node)
            if not isinstance(key, Hashable):  # e.g. "!!seq a": the constructor refuses it later
                continue
            line = key_node.start_mark.line + 1
            if key in lines:
                raise OptionsError(self.source, join(path, key), f"duplicate key (lines {lines[key]} and {line}): "
                                                                 "a key may appear once per mapping; keep one")
            lines[key] = line
        return node.value

    def child_path(self, path: str, key_node: Node) -> str:
        if isinstance(key_node, ScalarNode) and key_node.tag != MERGE_TAG:
            return join(path, self.loader.construct_object(key_node))
        return path
