"""Manifest: parse and validate a v1 YAML manifest into typed, frozen model specs, and the revision
requests (`mirror.repo.RevisionRequest`) they make.

Pure: no network, no printing. Every problem is a ManifestError naming the file, the 1-based line
and the key path (``models[2].revisions``; list indices count from 0, as in jq).

The YAML is composed into a node tree (``yaml.compose`` with the safe loader) rather than loaded into
Python objects, so every error can point at the line it comes from and duplicate mapping keys, which
PyYAML would silently collapse, are caught.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mirror.bounded import MANIFEST, compose_yaml, read_bounded
from mirror.errors import ManifestError
from mirror.repo import HUBS, SOURCES, SYNC_REPO_TYPES, RepoKey, RevisionRequest, repo_id_problem, wants
from mirror.settings import endpoint_problem

MANIFEST_VERSION = 1

TOP_KEYS = ("version", "defaults", "models")
DEFAULT_KEYS = ("source", "revisions", "revision", "include", "exclude", "type", "token_env", "endpoint")
MODEL_KEYS = ("repo", *DEFAULT_KEYS, "hf_id")


@dataclass(frozen=True)
class ModelSpec:
    """One repo to mirror, with the defaults already applied."""

    repo: str
    source: str
    revisions: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    repo_type: str = "model"
    token_env: str | None = None
    endpoint: str | None = None
    hf_id: str | None = None
    file: str = ""
    line: int = 0

    @property
    def key(self) -> RepoKey:
        return RepoKey(self.source, self.repo_type, self.repo)

    def wants(self, path: str) -> bool:
        """Whether a repo file passes the entry's include/exclude filter (see `mirror.repo.wants`)."""
        return wants(path, self.include, self.exclude)

    def requests(self) -> tuple[RevisionRequest, ...]:
        """What the entry asks for: each of its revisions, with its filter, endpoint, token and hf_id."""
        return tuple(
            RevisionRequest(
                self.key,
                revision,
                include=self.include,
                exclude=self.exclude,
                endpoint=self.endpoint,
                token_env=self.token_env,
                hf_id=self.hf_id,
            )
            for revision in self.revisions
        )


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest file."""

    path: str
    models: tuple[ModelSpec, ...]

    def requests(self) -> list[RevisionRequest]:
        """Every revision the manifest asks for, in the order written."""
        return [request for spec in self.models for request in spec.requests()]


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate one manifest file."""
    name = str(path)
    data = read_bounded(Path(path), MANIFEST, ManifestError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError("manifest is not UTF-8 text", file=name) from exc
    return parse_manifest(text, name)


def load_manifests(paths: Iterable[str | Path]) -> list[Manifest]:
    """Load several manifests. The same repo may appear in more than one; callers take the union."""
    return [load_manifest(path) for path in paths]


def parse_manifest(text: str, path: str = "<string>") -> Manifest:
    """Validate manifest text; ``path`` is only used in messages."""
    return _Parser(path).parse(text)


# --- value checks: each returns a problem to report, or None ------------------------------------

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters git forbids in ref names; no hub branch or tag can contain them.
_REF_FORBIDDEN = set("~^:?*[\\")


def _repo_problem(repo: str) -> str | None:
    if "://" in repo or repo.startswith(("huggingface.co/", "modelscope.cn/")):
        return f"{repo!r} looks like a URL; write just the repo id, e.g. 'org/name'"
    return repo_id_problem(repo)


def _revision_problem(rev: str) -> str | None:
    if not rev:
        return "a revision cannot be empty"
    if any(c.isspace() or not c.isprintable() for c in rev):
        return f"revision {rev!r} contains whitespace or control characters"
    if rev[0] in "/-":
        return f"revision {rev!r} cannot start with '/' or '-'"
    if ".." in rev or "//" in rev or "@{" in rev or rev.endswith("/"):
        return f"revision {rev!r} is not a valid branch, tag or commit (no '..', '//', '@{{' or trailing '/')"
    bad = sorted(_REF_FORBIDDEN.intersection(rev))
    if bad:
        return f"revision {rev!r} contains {''.join(bad)!r}, which no branch or tag can contain"
    return None


def _unbalanced_bracket(pattern: str) -> bool:
    # Mirrors fnmatch.translate: "]" right after "[" or "[!" is a literal member of the set.
    # fnmatch would quietly treat a lone "[" as a literal, which is never what was meant.
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            return True
        i = j + 1
    return False


def _glob_problem(pattern: str) -> str | None:
    if not pattern:
        return "a pattern cannot be empty"
    if pattern.startswith("/"):
        return f"pattern {pattern!r} is absolute; patterns match paths inside the repo, e.g. 'onnx/*'"
    if "\\" in pattern:
        return f"pattern {pattern!r} contains '\\'; repo paths use '/' between folders"
    if pattern.endswith("/"):
        return f"pattern {pattern!r} ends in '/' and would match nothing; write {pattern + '*'!r}"
    segments = pattern.split("/")
    if ".." in segments:
        return f"pattern {pattern!r} has a '..' segment; patterns cannot leave the repo"
    if "." in segments or "" in segments:
        return f"pattern {pattern!r} has an empty or '.' segment and would match nothing"
    if _unbalanced_bracket(pattern):
        return f"pattern {pattern!r} has a '[' without a closing ']'"
    return None


def _closest(word: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# --- the node-tree walker ------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
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


def _kind(node: Node) -> str:
    if node.tag.startswith(_TAG) and node.tag[len(_TAG) :] in _KIND:
        return _KIND[node.tag[len(_TAG) :]]
    tag = "!!" + node.tag[len(_TAG) :] if node.tag.startswith(_TAG) else node.tag
    return f"a value tagged {tag}"


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return int(mark.line) + 1 if mark is not None else None


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or exc.context or "cannot parse"
    if exc.context and exc.problem:
        where = f" started at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        problem += f" ({exc.context}{where})"
    return problem


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


@dataclass(frozen=True)
class _Value:
    """A validated value and where it was written (for errors that involve several keys)."""

    value: str | tuple[str, ...]
    node: Node
    key: str


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: Node | None, key: str | None, message: str) -> NoReturn:
        raise ManifestError(message, file=self.file, line=_line(node) if node is not None else None, key=key)

    # structure

    def parse(self, text: str) -> Manifest:
        try:
            root = compose_yaml(text, MANIFEST)
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            code = ord(exc.character) if isinstance(exc.character, str) else int(exc.character)
            raise ManifestError(
                f"invalid YAML: character U+{code:04X} is not allowed in YAML", file=self.file, line=line
            ) from exc
        except yaml.MarkedYAMLError as exc:
            raise ManifestError(
                f"invalid YAML: {_yaml_problem(exc)}", file=self.file, line=_mark_line(exc)
            ) from exc
        except yaml.YAMLError as exc:
            raise ManifestError(f"invalid YAML: {exc}", file=self.file) from exc
        if root is None:
            raise ManifestError(
                "manifest is empty; it needs 'version: 1' and 'models:'", file=self.file, line=1
            )
        if not isinstance(root, MappingNode):
            self.fail(root, None, f"a manifest is a mapping with 'version' and 'models', not {_kind(root)}")

        top = self.entries(root, "")
        # Version first: a newer manifest should say so rather than complain about its new keys.
        if "version" not in top:
            self.fail(root, "version", f"missing; a manifest starts with 'version: {MANIFEST_VERSION}'")
        self.check_version(top["version"][1])
        self.reject_unknown(top, TOP_KEYS, "")

        defaults: dict[str, _Value] = {}
        if "defaults" in top:
            defaults_node = top["defaults"][1]
            fields = self.entries(defaults_node, "defaults")
            self.reject_unknown(fields, DEFAULT_KEYS, "defaults")
            defaults = self.fields(fields, "defaults")

        if "models" not in top:
            self.fail(root, "models", "missing; list the repos to mirror under 'models:'")
        models_node = top["models"][1]
        items = self.sequence(models_node, "models")
        if not items:
            self.fail(models_node, "models", "is empty; list at least one repo ('- repo: org/name')")

        specs: list[ModelSpec] = []
        seen: dict[tuple[str, str, str], ModelSpec] = {}
        for index, item in enumerate(items):
            spec = self.model(item, f"models[{index}]", defaults)
            identity = (spec.source, spec.repo_type, spec.repo.casefold())
            first = seen.get(identity)
            if first is not None:
                self.fail(
                    item,
                    f"models[{index}]",
                    f"{spec.key} is already listed at line {first.line}; keep one entry and list every "
                    "revision you want in its 'revisions:'",
                )
            seen[identity] = spec
            specs.append(spec)
        return Manifest(path=self.file, models=tuple(specs))

    def entries(self, node: Node, key: str) -> dict[str, tuple[ScalarNode, Node]]:
        """The items of a mapping node by key name, rejecting non-string and duplicate keys."""
        if not isinstance(node, MappingNode) or node.tag != _TAG + "map":
            self.fail(node, key or None, f"expected a mapping, got {_kind(node)}")
        result: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _TAG + "merge":
                self.fail(key_node, key or None, "YAML merge keys ('<<') are not supported; use 'defaults:'")
            if not isinstance(key_node, ScalarNode) or key_node.tag != _TAG + "str":
                self.fail(key_node, key or None, f"keys must be strings, got {_kind(key_node)}")
            name = key_node.value
            if name in result:
                self.fail(
                    key_node,
                    _join(key, name),
                    f"duplicate key (first at line {_line(result[name][0])}); YAML would keep only the "
                    "last one, so remove one of them",
                )
            result[name] = (key_node, value_node)
        return result

    def reject_unknown(
        self, items: dict[str, tuple[ScalarNode, Node]], allowed: tuple[str, ...], key: str
    ) -> None:
        for name, (key_node, _) in items.items():
            if name not in allowed:
                self.fail(
                    key_node,
                    _join(key, name),
                    f"unknown key{_closest(name, allowed)}; allowed here: {', '.join(allowed)}",
                )

    def sequence(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, SequenceNode) or node.tag != _TAG + "seq":
            self.fail(node, key, f"expected a list, got {_kind(node)}")
        return list(node.value)

    def string(self, node: Node, key: str) -> str:
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "str":
            hint = ""
            if isinstance(node, ScalarNode) and node.tag[len(_TAG) :] in (
                "int",
                "float",
                "bool",
                "timestamp",
            ):
                hint = f'; quote it: "{node.value}"'
            self.fail(node, key, f"expected a string, got {_kind(node)}{hint}")
        return str(node.value)

    def strings(self, node: Node, key: str) -> list[tuple[str, Node, str]]:
        result = []
        for index, item in enumerate(self.sequence(node, key)):
            item_key = f"{key}[{index}]"
            result.append((self.string(item, item_key), item, item_key))
        return result

    def check_version(self, node: Node) -> None:
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "int":
            self.fail(
                node,
                "version",
                f"expected the integer {MANIFEST_VERSION} (no quotes), got {_kind(node)}",
            )
        version = SafeConstructor().construct_yaml_int(node)
        if version != MANIFEST_VERSION:
            self.fail(
                node,
                "version",
                f"unsupported manifest version {version}; this mirror reads version {MANIFEST_VERSION}",
            )

    # fields

    def fields(self, items: dict[str, tuple[ScalarNode, Node]], key: str) -> dict[str, _Value]:
        """Validate the known keys of a defaults or model mapping, each on its own."""
        if "revision" in items and "revisions" in items:
            later = max(("revision", "revisions"), key=lambda name: _line(items[name][0]))
            self.fail(items[later][0], _join(key, later), "use either 'revision' or 'revisions', not both")
        values: dict[str, _Value] = {}
        for name, (_, node) in items.items():
            field_key = _join(key, name)
            value: str | tuple[str, ...]
            if name == "revision":
                rev = self.string(node, field_key)
                self.check(node, field_key, _revision_problem(rev))
                name, value = "revisions", (rev,)
            elif name == "revisions":
                value = self.revisions(node, field_key)
            elif name in ("include", "exclude"):
                patterns = []
                for pattern, item, item_key in self.strings(node, field_key):
                    self.check(item, item_key, _glob_problem(pattern))
                    patterns.append(pattern)
                value = tuple(patterns)
            else:
                text = self.string(node, field_key)
                self.check(node, field_key, self.scalar_problem(name, text))
                value = text.rstrip("/") if name == "endpoint" else text
            values[name] = _Value(value, node, field_key)
        return values

    def revisions(self, node: Node, key: str) -> tuple[str, ...]:
        revs = self.strings(node, key)
        if not revs:
            self.fail(node, key, "is empty; list at least one branch, tag or commit, or leave the key out")
        seen: dict[str, Node] = {}
        for rev, item, item_key in revs:
            self.check(item, item_key, _revision_problem(rev))
            if rev in seen:
                self.fail(
                    item, item_key, f"revision {rev!r} is listed twice (first at line {_line(seen[rev])})"
                )
            seen[rev] = item
        return tuple(seen)

    @staticmethod
    def scalar_problem(name: str, text: str) -> str | None:
        if name == "source" and text not in SOURCES:
            return f"unknown source {text!r}{_closest(text, SOURCES)}; use one of: {', '.join(SOURCES)}"
        if name == "type" and text not in SYNC_REPO_TYPES:
            allowed = ", ".join(SYNC_REPO_TYPES)
            return f"unknown type {text!r}{_closest(text, SYNC_REPO_TYPES)}; use one of: {allowed}"
        if name == "token_env" and not _ENV_NAME.fullmatch(text):
            example = HUBS["huggingface"].token_env
            return f"{text!r} is not an environment variable name; give the variable's name (e.g. {example})"
        if name == "endpoint":
            return endpoint_problem(text)
        if name in ("repo", "hf_id"):
            return _repo_problem(text)
        return None

    def check(self, node: Node, key: str, problem: str | None) -> None:
        if problem is not None:
            self.fail(node, key, problem)

    def model(self, node: Node, key: str, defaults: dict[str, _Value]) -> ModelSpec:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "str":
            self.fail(node, key, f"expected a mapping, got a string; write '- repo: {node.value}'")
        items = self.entries(node, key)
        self.reject_unknown(items, MODEL_KEYS, key)
        if "repo" not in items:
            self.fail(node, _join(key, "repo"), "missing; every model entry needs 'repo: org/name'")
        own = self.fields(items, key)
        merged = {**defaults, **own}

        def text(name: str) -> str | None:
            value = merged[name].value if name in merged else None
            return value if isinstance(value, str) else None

        def sequence(name: str) -> tuple[str, ...] | None:
            value = merged[name].value if name in merged else None
            return value if isinstance(value, tuple) else None

        repo = str(own["repo"].value)
        source = text("source") or SOURCES[0]
        repo_type = text("type") or SYNC_REPO_TYPES[0]
        if source == "modelscope" and "/" not in repo:
            self.fail(
                own["repo"].node, own["repo"].key, f"ModelScope ids are always 'owner/name', got {repo!r}"
            )
        if source == "modelscope" and repo_type == "dataset":
            # Point at whichever of the two keys this entry wrote itself, else at the inherited one.
            culprit = own.get("type") or own.get("source") or merged["type"]
            self.fail(
                culprit.node, culprit.key, "datasets from ModelScope are not supported; mirror models only"
            )
        if "hf_id" in own and source != "modelscope":
            self.fail(
                own["hf_id"].node,
                own["hf_id"].key,
                f"hf_id only applies to 'source: modelscope'; this entry's source is {source}",
            )
        return ModelSpec(
            repo=repo,
            source=source,
            revisions=sequence("revisions") or (HUBS[source].default_revision,),
            include=sequence("include") or (),
            exclude=sequence("exclude") or (),
            repo_type=repo_type,
            token_env=text("token_env"),
            endpoint=text("endpoint"),
            hf_id=text("hf_id"),
            file=self.file,
            line=_line(node),
        )


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name
