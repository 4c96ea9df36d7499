"""The v1 manifest schema: which keys go where (top level, `defaults:`, each model entry), the version,
how an entry inherits the defaults, and one entry per repo. Walks the node tree into a `Manifest`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from mirror.errors import ManifestError
from mirror.manifest.nodes import TAG, NodeReader, compose, join_key, kind, line
from mirror.manifest.policy import make_policy, policy_fields
from mirror.manifest.spec import Manifest, ModelSpec
from mirror.manifest.values import closest, glob_problem, revision_problem, scalar_problem
from mirror.repo import HUBS, SOURCES, SYNC_REPO_TYPES

MANIFEST_VERSION = 1

TOP_KEYS = ("version", "defaults", "models")
DEFAULT_KEYS = (
    "source",
    "revisions",
    "revision",
    "include",
    "exclude",
    "type",
    "token_env",
    "endpoint",
    "policy",
)
MODEL_KEYS = ("repo", *DEFAULT_KEYS, "hf_id")


def parse_manifest(text: str, path: str = "<string>") -> Manifest:
    """Validate manifest text; ``path`` is only used in messages."""
    return _Parser(path).parse(text)


@dataclass(frozen=True)
class _Value:
    """A validated value and where it was written (for errors that involve several keys)."""

    value: str | tuple[str, ...] | dict[str, Any]  # a dict: the keys a `policy:` sets
    node: Node
    key: str


class _Parser(NodeReader):
    # structure

    def parse(self, text: str) -> Manifest:
        root = compose(text, self.file)
        if root is None:
            raise ManifestError(
                "manifest is empty; it needs 'version: 1' and 'models:'", file=self.file, line=1
            )
        if not isinstance(root, MappingNode):
            self.fail(root, None, f"a manifest is a mapping with 'version' and 'models', not {kind(root)}")

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

    def reject_unknown(
        self, items: dict[str, tuple[ScalarNode, Node]], allowed: tuple[str, ...], key: str
    ) -> None:
        for name, (key_node, _) in items.items():
            if name not in allowed:
                self.fail(
                    key_node,
                    join_key(key, name),
                    f"unknown key{closest(name, allowed)}; allowed here: {', '.join(allowed)}",
                )

    def check_version(self, node: Node) -> None:
        if not isinstance(node, ScalarNode) or node.tag != TAG + "int":
            self.fail(
                node,
                "version",
                f"expected the integer {MANIFEST_VERSION} (no quotes), got {kind(node)}",
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
            later = max(("revision", "revisions"), key=lambda name: line(items[name][0]))
            self.fail(items[later][0], join_key(key, later), "use either 'revision' or 'revisions', not both")
        values: dict[str, _Value] = {}
        for name, (_, node) in items.items():
            field_key = join_key(key, name)
            value: str | tuple[str, ...] | dict[str, Any]
            if name == "policy":
                value = policy_fields(self, node, field_key)
            elif name == "revision":
                rev = self.string(node, field_key)
                self.check(node, field_key, revision_problem(rev))
                name, value = "revisions", (rev,)
            elif name == "revisions":
                value = self.revisions(node, field_key)
            elif name in ("include", "exclude"):
                patterns = []
                for pattern, item, item_key in self.strings(node, field_key):
                    self.check(item, item_key, glob_problem(pattern))
                    patterns.append(pattern)
                value = tuple(patterns)
            else:
                text = self.string(node, field_key)
                self.check(node, field_key, scalar_problem(name, text))
                value = text.rstrip("/") if name == "endpoint" else text
            values[name] = _Value(value, node, field_key)
        return values

    def revisions(self, node: Node, key: str) -> tuple[str, ...]:
        revs = self.strings(node, key)
        if not revs:
            self.fail(node, key, "is empty; list at least one branch, tag or commit, or leave the key out")
        seen: dict[str, Node] = {}
        for rev, item, item_key in revs:
            self.check(item, item_key, revision_problem(rev))
            if rev in seen:
                self.fail(
                    item, item_key, f"revision {rev!r} is listed twice (first at line {line(seen[rev])})"
                )
            seen[rev] = item
        return tuple(seen)

    def model(self, node: Node, key: str, defaults: dict[str, _Value]) -> ModelSpec:
        if isinstance(node, ScalarNode) and node.tag == TAG + "str":
            self.fail(node, key, f"expected a mapping, got a string; write '- repo: {node.value}'")
        items = self.entries(node, key)
        self.reject_unknown(items, MODEL_KEYS, key)
        if "repo" not in items:
            self.fail(node, join_key(key, "repo"), "missing; every model entry needs 'repo: org/name'")
        own = self.fields(items, key)
        merged = {**defaults, **own}

        def text(name: str) -> str | None:
            value = merged[name].value if name in merged else None
            return value if isinstance(value, str) else None

        def sequence(name: str) -> tuple[str, ...] | None:
            value = merged[name].value if name in merged else None
            return value if isinstance(value, tuple) else None

        def policy_of(values: dict[str, _Value]) -> dict[str, Any]:
            value = values["policy"].value if "policy" in values else None
            return value if isinstance(value, dict) else {}

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
            policy=make_policy(policy_of(defaults), policy_of(own)),
            file=self.file,
            line=line(node),
        )
