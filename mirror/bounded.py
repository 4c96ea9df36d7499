"""Bounded reads of the small files mirror parses: every such file is opened without blocking, must be a
regular file, and is read and parsed within the limits of its kind, named here in one place.

A manifest, a lock file, a bundle index, a signature, a key, a have.json, a receipt or a store record that
is huge, nested without end, `/dev/zero`, a FIFO nobody writes to or a folder is refused at once, in small
memory, with the error class the caller gives (UsageError for what the user hands over, IntegrityError for
what comes in a bundle), naming the file. A hub's JSON answer is held to its bound too (see mirror.http).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from mirror.errors import ManifestError, MirrorError


@dataclass(frozen=True)
class Bound:
    """How large a file of one kind may be, and how deep (and, for YAML, how many values) it may nest."""

    what: str
    size: int
    depth: int = 32
    values: int = 1 << 20


# The one table of limits. Each is far above what mirror writes or a person types, far below harm.
MANIFEST = Bound("manifest", 1 << 20, depth=16, values=1 << 18)
LOCK_FILE = Bound("lock file", 256 << 20, depth=16)
INDEX = Bound("bundle index", 64 << 20, depth=16)
SUMS = Bound("SHA256SUMS", INDEX.size)  # a bundle's second member: a line per member the index names
SIGNATURE = Bound("signature", 64 << 10, depth=8)
SHA256_LINE = Bound("sha256 file", 8 << 10)
KEY = Bound("key file", 64 << 10)
HAVE = Bound("inventory file", 256 << 20, depth=16)
RECORD = Bound("record", 256 << 20, depth=16)  # receipts, .mirror/*.json, store records, trust state
REF = Bound("ref", 4 << 10)  # a ref file of a Hugging Face cache: one commit hash
HUB_ANSWER = Bound("hub's answer", 256 << 20, depth=64)  # a listing; a model card's metadata nests in it
CARD = Bound("model card", 1 << 20, depth=16, values=1 << 16)  # a README's YAML front matter, served
POLICY = Bound("policy file", 64 << 10, depth=8, values=1 << 12)  # --policy FILE
MODEL_CONFIG = Bound("model config", 16 << 20, depth=64)  # config.json, tokenizer_config.json: their auto_map


def refusal(error: type[MirrorError], path: Path, reason: str) -> MirrorError:
    """`error` saying why the file at `path` is refused, naming it first (a ManifestError in its field)."""
    if issubclass(error, ManifestError):
        return error(reason, file=str(path))
    return error(f"{path}: {reason}")


def open_regular(path: Path, error: type[MirrorError], what: str) -> int:
    """A descriptor of `path` open for reading, checked to be a regular file (never blocking on a FIFO or
    a device); `error` naming the file otherwise. OSError (absent, not allowed) passes through."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refusal(error, path, f"the {what} is {_kind(mode)}, not a regular file; refusing it")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


@overload
def read_bounded(
    path: Path, bound: Bound, error: type[MirrorError], *, missing_ok: Literal[False] = ...
) -> bytes: ...
@overload
def read_bounded(
    path: Path, bound: Bound, error: type[MirrorError], *, missing_ok: Literal[True]
) -> bytes | None: ...
def read_bounded(
    path: Path, bound: Bound, error: type[MirrorError], *, missing_ok: bool = False
) -> bytes | None:
    """The bytes of a regular file of at most `bound.size`; `error` naming the file for anything else
    (absent too, unless `missing_ok`: then None)."""
    try:
        fd = open_regular(path, error, bound.what)
    except OSError as e:
        if missing_ok and isinstance(e, FileNotFoundError):
            return None
        raise refusal(error, path, f"cannot read the {bound.what}: {e.strerror or e}") from None
    try:
        if os.fstat(fd).st_size > bound.size:
            raise refusal(error, path, f"the {bound.what} is larger than {bound.size} bytes; refusing it")
        chunks, total = [], 0
        while total <= bound.size:  # the file may grow while it is read
            chunk = os.read(fd, min(1 << 20, bound.size + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise refusal(error, path, f"cannot read the {bound.what}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if total > bound.size:
        raise refusal(error, path, f"the {bound.what} is larger than {bound.size} bytes; refusing it")
    return b"".join(chunks)


def parse_json(
    data: bytes, bound: Bound, *, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None
) -> Any:
    """JSON text (UTF-8) nested at most `bound.depth` deep; ValueError saying what is wrong.
    `object_pairs_hook` as json.loads's (to see a key an object repeats)."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=object_pairs_hook)
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {bound.depth} levels") from None
    if _depth(value, bound.depth) > bound.depth:
        raise ValueError(f"nested deeper than {bound.depth} levels")
    return value


def _depth(value: Any, limit: int) -> int:
    """How deep lists and objects nest in value, counting no further than limit + 1 (no recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > limit:
                break
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_json_bounded(path: Path, bound: Bound, error: type[MirrorError], *, missing_ok: bool = False) -> Any:
    """`read_bounded` then `parse_json`; `error` naming the file for anything wrong (None for an absent
    file, with `missing_ok`)."""
    data = (
        read_bounded(path, bound, error, missing_ok=True) if missing_ok else read_bounded(path, bound, error)
    )
    if data is None:
        return None
    try:
        return parse_json(data, bound)
    except ValueError as e:
        raise refusal(error, path, f"the {bound.what} is not valid JSON: {e}") from None


class _DepthLoader(yaml.SafeLoader):
    """The safe loader, refusing nodes nested deeper than `limit` as they are composed (before Python's own
    recursion limit is reached)."""

    limit = 32
    _level = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._level += 1
        try:
            if self._level > self.limit:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested deeper than {self.limit} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._level -= 1


def compose_yaml(text: str, bound: Bound) -> Node | None:
    """The YAML node tree of `text` (the safe loader's, unconstructed), nested at most `bound.depth` deep
    and, with every alias counted as the values it repeats, of at most `bound.values` nodes: a "billion
    laughs" of anchors is refused, not expanded. Raises yaml.YAMLError (limits: as a MarkedYAMLError)."""
    loader = type("_Loader", (_DepthLoader,), {"limit": bound.depth})
    root: Node | None = yaml.compose(text, Loader=loader)
    if root is not None and _expanded_size(root, bound.values) > bound.values:
        raise yaml.composer.ComposerError(
            None,
            None,
            f"more than {bound.values} values once its aliases (*name) are expanded",
            root.start_mark,
        )
    return root


def _expanded_size(root: Node, limit: int) -> int:
    """The nodes of the tree with each alias counted as a copy of what it names; stops past limit. An
    anchored node may be shared by many parents: its size is computed once (children before parents)."""
    sizes: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if done:
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
        elif id(node) in entered:
            return limit + 1  # an alias inside what it names: endless once expanded
        else:
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []
