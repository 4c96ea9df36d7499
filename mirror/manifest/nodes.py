"""The manifest's YAML as a node tree that keeps every line, and the reading of its nodes with errors that
name the file, the line and the key.

The YAML is composed into a node tree (``yaml.compose`` with the safe loader) rather than loaded into
Python objects, so every error can point at the line it comes from and duplicate mapping keys, which
PyYAML would silently collapse, are caught.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mirror.bounded import MANIFEST, Bound, compose_yaml, read_bounded
from mirror.errors import ManifestError

TAG = "tag:yaml.org,2002:"
_KIND = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "an empty value",
    "timestamp": "a date",
    "binary": "binary data",
    "map": "a mapping",
    "seq": "a list",
}


def kind(node: Node) -> str:
    """What a node is, in words ("a string", "a list", "a value tagged !foo")."""
    if node.tag.startswith(TAG) and node.tag[len(TAG) :] in _KIND:
        return _KIND[node.tag[len(TAG) :]]
    tag = "!!" + node.tag[len(TAG) :] if node.tag.startswith(TAG) else node.tag
    return f"a value tagged {tag}"


def line(node: Node) -> int:
    """The 1-based line a node starts on."""
    return int(node.start_mark.line) + 1


def join_key(parent: str, name: str) -> str:
    """The key path of ``name`` inside ``parent`` (``models[0].repo``)."""
    return f"{parent}.{name}" if parent else name


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return int(mark.line) + 1 if mark is not None else None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or exc.context or "cannot parse"
    if exc.context and exc.problem:
        where = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        problem += f" ({exc.context}{where})"
    return problem


def read_text(path: str | Path, bound: Bound) -> str:
    """The UTF-8 text of a manifest or a policy file, within its bound; ManifestError naming the file."""
    data = read_bounded(Path(path), bound, ManifestError)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{bound.what} is not UTF-8 text", file=str(path)) from exc


def compose(text: str, file: str, bound: Bound = MANIFEST) -> Node | None:
    """The node tree of manifest text (or a policy file's; None for an empty document); invalid YAML is a
    ManifestError at its line."""
    try:
        return compose_yaml(text, bound)
    except yaml.reader.ReaderError as exc:
        at = text.count("\n", 0, exc.position) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
        raise ManifestError(
            f"invalid YAML: character U+{code:04X} is not allowed in YAML", file=file, line=at
        ) from exc
    except yaml.MarkedYAMLError as exc:
        raise ManifestError(f"invalid YAML: {_yaml_problem(exc)}", file=file, line=_mark_line(exc)) from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {exc}", file=file) from exc


class NodeReader:
    """Reads the nodes of one file's tree as mappings, lists and strings; anything else is a ManifestError
    at the node's line and key."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: Node | None, key: str | None, message: str) -> NoReturn:
        raise ManifestError(message, file=self.file, line=line(node) if node is not None else None, key=key)

    def check(self, node: Node, key: str, problem: str | None) -> None:
        if problem is not None:
            self.fail(node, key, problem)

    def entries(self, node: Node, key: str) -> dict[str, tuple[ScalarNode, Node]]:
        """The items of a mapping node by key name, rejecting non-string and duplicate keys."""
        if not isinstance(node, MappingNode) or node.tag != TAG + "map":
            self.fail(node, key or None, f"expected a mapping, got {kind(node)}")
        result: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == TAG + "merge":
                self.fail(key_node, key or None, "YAML merge keys ('<<') are not supported; use 'defaults:'")
            if not isinstance(key_node, ScalarNode) or key_node.tag != TAG + "str":
                self.fail(key_node, key or None, f"keys must be strings, got {kind(key_node)}")
            name = key_node.value
            if name in result:
                self.fail(
                    key_node,
                    join_key(key, name),
                    f"duplicate key (first at line {line(result[name][0])}); YAML would keep only the "
                    "last one, so remove one of them",
                )
            result[name] = (key_node, value_node)
        return result

    def sequence(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, SequenceNode) or node.tag != TAG + "seq":
            self.fail(node, key, f"expected a list, got {kind(node)}")
        return list(node.value)

    def string(self, node: Node, key: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != TAG + "str":
            hint = ""
            if isinstance(node, ScalarNode) and node.tag[len(TAG) :] in (
                "int",
                "float",
                "bool",
                "timestamp",
            ):
                hint = f'; quote it: "{node.value}"'
            self.fail(node, key, f"expected a string, got {kind(node)}{hint}")
        return str(node.value)

    def strings(self, node: Node, key: str) -> list[tuple[str, Node, str]]:
        result = []
        for index, item in enumerate(self.sequence(node, key)):
            item_key = f"{key}[{index}]"
            result.append((self.string(item, item_key), item, item_key))
        return result
