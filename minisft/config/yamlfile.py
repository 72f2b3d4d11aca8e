"""YAML text into plain values, keeping each dotted key's line; YAML errors as ConfigError.

The YAML is composed (not loaded) so that each key keeps its line, and the node tree is
walked here with caps on size, depth and aliases.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from minisft.config.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; more is a mistake or an attack
# libyaml when PyYAML has it (Debian's python3-yaml does): a 1 MiB file composes in about
# 1 s instead of 7, and it refuses deep flow nesting itself instead of recursing
YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_NODES = 50_000  # values after alias expansion: stops "billion laughs" documents
MAX_DEPTH = 40
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*", re.ASCII)
_PATH_TAIL = re.compile(r'(\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\]|\["(?:[^"\\]|\\.)*"\])$')

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _join(path: str, key: str) -> str:
    if not _SIMPLE_KEY.fullmatch(key):
        escaped = key.replace("\\", "\\\\").replace('"', '\\"')
        return f'{path}["{escaped}"]'
    return f"{path}.{key}" if path else key


def _parent(path: str) -> str | None:
    m = _PATH_TAIL.search(path)
    if m is None:
        return "" if path else None
    return path[: m.start()]


class _Tree:
    """Builds plain Python values from composed YAML nodes, noting each path's line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {"": 1}
        self.count = 0
        self._open: set[int] = set()  # collection nodes being built: catches "&a [*a]"
        self._scalars = SafeConstructor()

    def error(self, path: str, message: str, node: Node) -> ConfigError:
        return ConfigError(path, message, line=node.start_mark.line + 1, source=self.source)

    def build(self, node: Node, path: str, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(path, f"the document expands to more than {MAX_NODES} values "
                             "(too many YAML aliases?)", node)
        if depth > MAX_DEPTH:
            raise self.error(path, f"nested more than {MAX_DEPTH} levels deep", node)
        if isinstance(node, ScalarNode):
            try:
                return self._scalars.construct_object(node)
            except yaml.YAMLError as exc:
                problem = getattr(exc, "problem", None) or "cannot read this value"
                raise self.error(path, f"{problem} (tag {node.tag})", node) from None
        if id(node) in self._open:
            raise self.error(path, "a YAML alias refers to a node that contains it", node)
        self._open.add(id(node))
        try:
            return self._collection(node, path, depth)
        finally:
            self._open.discard(id(node))

    def _collection(self, node: Node, path: str, depth: int) -> Any:
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(path, f"unsupported YAML tag {node.tag}", node)
            out: list[Any] = []
            for i, item in enumerate(node.value):
                sub = f"{path}[{i}]"
                self.lines.setdefault(sub, item.start_mark.line + 1)
                out.append(self.build(item, sub, depth + 1))
            return out
        if isinstance(node, MappingNode):
            if node.tag != _MAP_TAG:
                raise self.error(path, f"unsupported YAML tag {node.tag}", node)
            return self._mapping(node, path, depth)
        raise self.error(path, "unsupported YAML node", node)  # pragma: no cover

    def _mapping(self, node: MappingNode, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, int] = {}
        # "<<: *defaults" first, so that keys given here win (their values and their lines)
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [
                value_node]
            for source_node in sources:
                if not isinstance(source_node, MappingNode):
                    raise self.error(path, "'<<' merges only mappings", source_node)
                self.count += 1
                if self.count > MAX_NODES:
                    raise self.error(path, f"the document expands to more than {MAX_NODES} "
                                     "values (too many YAML aliases?)", source_node)
                if id(source_node) in self._open:
                    raise self.error(path, "a YAML alias refers to a node that contains it",
                                     source_node)
                self._open.add(id(source_node))
                try:
                    for key, value in self._mapping(source_node, path, depth).items():
                        out.setdefault(key, value)
                finally:
                    self._open.discard(id(source_node))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                raise self.error(path, "a key must be a plain name, not a list or mapping",
                                 key_node)
            # the key as written: YAML 1.1 would read "on:" or "no:" as booleans
            key = str(key_node.value)
            sub = _join(path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(sub, f"duplicate key (first given on line {seen[key]})",
                                  line=line, source=self.source)
            seen[key] = line
            self.lines[sub] = line
            out[key] = self.build(value_node, sub, depth + 1)
        return out


def _compose(text: str, source: str) -> tuple[Any, dict[str, int]]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError("", f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config file",
                          source=source)
    try:
        root = yaml.compose(text, Loader=YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        # never quote the snippet PyYAML attaches: the bad line may hold a secret
        problem = exc.problem or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if "nesting depth" in problem:  # libyaml's own cap on flow nesting
            problem = f"nested too deeply (more than {MAX_DEPTH} levels)"
        elif "'\\t'" in problem or (mark is not None and text[mark.index:mark.index + 1]
                                     == "\t"):
            problem += " (indent with spaces, not tabs)"
        line = mark.line + 1 if mark is not None else None
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError("", f"not valid YAML: {problem}{context}", line=line,
                          source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"not valid YAML: {type(exc).__name__}", source=source) from None
    except RecursionError:
        raise ConfigError("", f"not valid YAML: nested too deeply (more than {MAX_DEPTH} "
                          "levels)", source=source) from None
    if root is None:
        raise ConfigError("", "the file is empty (it needs at least a node: section)",
                          line=1, source=source)
    tree = _Tree(source)
    data = tree.build(root, "")
    return data, tree.lines
