"""Tests for mirror.manifest: every error names file, line and key; good manifests parse as documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.errors import ManifestError
from mirror.manifest import Manifest, ModelSpec, load_manifest, load_manifests, parse_manifest
from mirror.repo import HUBS

MANIFESTS_DIR = Path(__file__).resolve().parent.parent / "manifests"


def m(*lines: str) -> str:
    """Manifest text from lines, so a case's expected line number is its 1-based position here."""
    return "\n".join(lines) + "\n"


def load_bad(tmp_path: Path, text: str | bytes) -> ManifestError:
    path = tmp_path / "bad.yml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    return info.value


def assert_error(err: ManifestError, path: Path, line: int | None, key: str | None, fragment: str) -> None:
    assert err.exit_code == 2
    assert (err.file, err.line, err.key) == (str(path), line, key)
    prefix = ": ".join(p for p in (f"{path}:{line}" if line else str(path), key) if p)
    assert str(err).startswith(prefix + ": "), str(err)
    assert fragment in err.message, err.message


# (id, manifest text, expected line, expected key path, fragment of the message)
BAD = [
    # structure
    ("empty-file", "", 1, None, "manifest is empty"),
    ("comments-only", m("# nothing here", "# still nothing"), 1, None, "manifest is empty"),
    ("top-is-list", m("- repo: gpt2"), 1, None, "a manifest is a mapping"),
    ("top-is-string", m("hello"), 1, None, "a manifest is a mapping"),
    ("missing-version", m("models:", "  - repo: gpt2"), 1, "version", "missing"),
    (
        "version-2",
        m("version: 2", "models:", "  - repo: gpt2"),
        1,
        "version",
        "unsupported manifest version 2",
    ),
    ("version-2-reported-before-new-keys", m("version: 2", "sources: {}"), 1, "version", "version 2"),
    ("version-string", m('version: "1"', "models:", "  - repo: gpt2"), 1, "version", "got a string"),
    ("version-float", m("version: 1.0", "models:", "  - repo: gpt2"), 1, "version", "got a number"),
    ("version-bool", m("version: true", "models:", "  - repo: gpt2"), 1, "version", "got a boolean"),
    ("missing-models", m("version: 1", "defaults:", "  source: huggingface"), 1, "models", "missing"),
    ("models-empty", m("version: 1", "models: []"), 2, "models", "is empty"),
    ("models-null", m("version: 1", "models:"), 2, "models", "expected a list, got an empty value"),
    (
        "models-mapping",
        m("version: 1", "models:", "  repo: gpt2"),
        3,
        "models",
        "expected a list, got a mapping",
    ),
    (
        "defaults-list",
        m("version: 1", "defaults: [main]", "models:", "  - repo: gpt2"),
        2,
        "defaults",
        "mapping",
    ),
    ("model-is-string", m("version: 1", "models:", "  - gpt2"), 3, "models[0]", "write '- repo: gpt2'"),
    (
        "model-is-list",
        m("version: 1", "models:", "  - [gpt2]"),
        3,
        "models[0]",
        "expected a mapping, got a list",
    ),
    (
        "non-string-key",
        m("version: 1", "models:", "  - repo: gpt2", "    1: x"),
        4,
        "models[0]",
        "keys must be",
    ),
    # unknown keys, with a suggestion and the allowed list
    ("unknown-top", m("version: 1", "modles:", "  - repo: gpt2"), 2, "modles", "did you mean 'models'?"),
    (
        "unknown-defaults",
        m("version: 1", "defaults:", "  revison: main", "models:", "  - repo: gpt2"),
        3,
        "defaults.revison",
        "did you mean 'revision'?",
    ),
    (
        "hf_id-not-a-default",
        m("version: 1", "defaults:", "  hf_id: a/b", "models:", "  - repo: gpt2"),
        3,
        "defaults.hf_id",
        "allowed here: source, revisions, revision, include, exclude, type, token_env, endpoint",
    ),
    (
        "unknown-model",
        m("version: 1", "models:", "  - repo: gpt2", "  - repo: bert-base-uncased", "    exclud: ['*.h5']"),
        5,
        "models[1].exclud",
        "did you mean 'exclude'?",
    ),
    ("unknown-no-suggestion", m("version: 1", "zzzz: 1"), 2, "zzzz", "unknown key; allowed here: version"),
    # required keys and wrong types
    (
        "missing-repo",
        m("version: 1", "models:", "  - repo: gpt2", "  - revision: v1"),
        4,
        "models[1].repo",
        "missing",
    ),
    ("repo-null", m("version: 1", "models:", "  - repo:"), 3, "models[0].repo", "got an empty value"),
    ("repo-int", m("version: 1", "models:", "  - repo: 42"), 3, "models[0].repo", 'quote it: "42"'),
    (
        "include-string",
        m("version: 1", "models:", "  - repo: gpt2", "    include: '*.json'"),
        4,
        "models[0].include",
        "expected a list, got a string",
    ),
    (
        "revisions-string",
        m("version: 1", "models:", "  - repo: gpt2", "    revisions: main"),
        4,
        "models[0].revisions",
        "expected a list",
    ),
    (
        "revisions-number",
        m("version: 1", "models:", "  - repo: gpt2", "    revisions:", "      - main", "      - 1.0"),
        6,
        "models[0].revisions[1]",
        'got a number; quote it: "1.0"',
    ),
    (
        "revision-date",
        m("version: 1", "models:", "  - repo: gpt2", "    revision: 2024-01-01"),
        4,
        "models[0].revision",
        "got a date",
    ),
    (
        "revisions-nested-list",
        m("version: 1", "defaults:", "  revisions: [[main]]", "models:", "  - repo: gpt2"),
        3,
        "defaults.revisions[0]",
        "expected a string, got a list",
    ),
    (
        "token_env-list",
        m("version: 1", "models:", "  - repo: gpt2", "    token_env: [HF_TOKEN]"),
        4,
        "models[0].token_env",
        "expected a string",
    ),
    (
        "source-bool",
        m("version: 1", "defaults:", "  source: yes", "models:", "  - repo: gpt2"),
        3,
        "defaults.source",
        "got a boolean",
    ),
    # revision / revisions
    (
        "revision-and-revisions",
        m("version: 1", "models:", "  - repo: gpt2", "    revisions: [main]", "    revision: v1"),
        5,
        "models[0].revision",
        "either 'revision' or 'revisions'",
    ),
    (
        "revisions-then-revision-in-defaults",
        m("version: 1", "defaults:", "  revision: main", "  revisions: [v1]", "models:", "  - repo: gpt2"),
        4,
        "defaults.revisions",
        "not both",
    ),
    (
        "revisions-empty",
        m("version: 1", "models:", "  - repo: gpt2", "    revisions: []"),
        4,
        "models[0].revisions",
        "is empty",
    ),
    (
        "duplicate-revision",
        m(
            "version: 1",
            "models:",
            "  - repo: gpt2",
            "    revisions:",
            "      - main",
            "      - v1",
            "      - main",
        ),
        7,
        "models[0].revisions[2]",
        "'main' is listed twice (first at line 5)",
    ),
    # values
    (
        "unknown-source",
        m("version: 1", "models:", "  - repo: gpt2", "    source: hugginface"),
        4,
        "models[0].source",
        "did you mean 'huggingface'?",
    ),
    (
        "unknown-type",
        m("version: 1", "models:", "  - repo: gpt2", "    type: datasets"),
        4,
        "models[0].type",
        "did you mean 'dataset'?",
    ),
    (
        "modelscope-dataset",
        m("version: 1", "models:", "  - repo: iic/x", "    source: modelscope", "    type: dataset"),
        5,
        "models[0].type",
        "datasets from ModelScope are not supported",
    ),
    (
        "modelscope-dataset-via-defaults",
        m(
            "version: 1",
            "defaults:",
            "  type: dataset",
            "models:",
            "  - repo: iic/x",
            "    source: modelscope",
        ),
        6,
        "models[0].source",
        "datasets from ModelScope are not supported",
    ),
    (
        "modelscope-short-id",
        m("version: 1", "models:", "  - repo: gpt2", "    source: modelscope"),
        3,
        "models[0].repo",
        "ModelScope ids are always 'owner/name'",
    ),
    (
        "hf_id-on-huggingface",
        m("version: 1", "models:", "  - repo: gpt2", "    hf_id: openai/gpt2"),
        4,
        "models[0].hf_id",
        "only applies to 'source: modelscope'",
    ),
    (
        "hf_id-invalid",
        m("version: 1", "models:", "  - repo: iic/x", "    source: modelscope", "    hf_id: a/b/c"),
        5,
        "models[0].hf_id",
        "more than one '/'",
    ),
    # duplicates
    (
        "duplicate-entry",
        m("version: 1", "models:", "  - repo: gpt2", "  - repo: org/x", "  - repo: gpt2", "    revision: v1"),
        5,
        "models[2]",
        "huggingface:gpt2 is already listed at line 3",
    ),
    (
        "duplicate-entry-case",
        m("version: 1", "models:", "  - repo: Org/Name", "  - repo: org/name"),
        4,
        "models[1]",
        "already listed at line 3",
    ),
    (
        "duplicate-entry-via-default-source",
        m("version: 1", "defaults: {source: modelscope}", "models:", "  - repo: iic/x", "  - {repo: iic/x}"),
        5,
        "models[1]",
        "modelscope:iic/x is already listed at line 4",
    ),
    (
        "duplicate-key-model",
        m("version: 1", "models:", "  - repo: gpt2", "    include: ['*.json']", "    include: ['*.txt']"),
        5,
        "models[0].include",
        "duplicate key (first at line 4)",
    ),
    (
        "duplicate-key-top",
        m("version: 1", "models: []", "version: 1"),
        3,
        "version",
        "duplicate key (first at line 1)",
    ),
    (
        "duplicate-key-defaults",
        m(
            "version: 1",
            "defaults:",
            "  source: huggingface",
            "  source: modelscope",
            "models: [{repo: a/b}]",
        ),
        4,
        "defaults.source",
        "duplicate key",
    ),
    # YAML itself
    (
        "yaml-unclosed-flow",
        m("version: 1", "models:", "  - repo: [gpt2", "  - repo: x"),
        4,
        None,
        "invalid YAML",
    ),
    ("yaml-tab", m("version: 1", "models:", "\t- repo: gpt2"), 3, None, "invalid YAML"),
    (
        "yaml-bad-indent",
        m("version: 1", "models:", "  - repo: gpt2", "   include: []"),
        4,
        None,
        "invalid YAML",
    ),
    ("yaml-two-documents", m("version: 1", "---", "version: 1"), 2, None, "single document"),
    ("yaml-undefined-alias", m("version: 1", "models: *nope"), 2, None, "undefined alias"),
    ("yaml-control-char", m("version: 1", "models: \x07"), 2, None, "U+0007"),
    (
        "yaml-python-tag",
        m("version: 1", "models:", "  - repo: !!python/object/apply:os.system [ls]"),
        3,
        "models[0].repo",
        "tagged !!python/object/apply:os.system",
    ),
    ("yaml-custom-tag", m("version: 1", "models: !list", "  - repo: gpt2"), 2, "models", "tagged !list"),
    ("yaml-merge-key", m("version: 1", "models:", "  - <<: {repo: gpt2}"), 3, "models[0]", "merge keys"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_manifest(tmp_path: Path, text: str, line: int, key: str | None, fragment: str) -> None:
    err = load_bad(tmp_path, text)
    assert_error(err, tmp_path / "bad.yml", line, key, fragment)


@pytest.mark.parametrize(
    ("repo", "fragment"),
    [
        ("org/name/extra", "more than one '/'"),
        ("https://huggingface.co/gpt2", "looks like a URL"),
        ("huggingface.co/org/name", "looks like a URL"),
        ("-gpt2", "cannot start or end with '-' or '.'"),
        ("gpt2-", "cannot start or end"),
        (".hidden", "cannot start or end"),
        ("org/name.", "cannot start or end"),
        ("org/na--me", "'--' or '..'"),
        ("org/na..me", "'--' or '..'"),
        ("org/name.git", "cannot end in '.git'"),
        ("org name", "may only contain"),
        ("org/na$me", "may only contain"),
        ("org/", "empty part"),
        ("/name", "empty part"),
        ("", "empty part"),
        ("a" * 97, "at most 96"),
        ("org/" + "b" * 97, "at most 96"),
    ],
)
def test_bad_repo_id(tmp_path: Path, repo: str, fragment: str) -> None:
    err = load_bad(tmp_path, m("version: 1", "models:", "  - repo: x/ok", f"  - repo: '{repo}'"))
    assert_error(err, tmp_path / "bad.yml", 4, "models[1].repo", fragment)


def test_repo_id_limits_accepted() -> None:
    spec = parse_manifest(m("version: 1", "models:", f"  - repo: {'a' * 96}/b_c.d-e")).models[0]
    assert spec.repo == "a" * 96 + "/b_c.d-e"


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("", "cannot be empty"),
        ("/config.json", "is absolute"),
        ("../secrets", "'..' segment"),
        ("onnx/../../x", "'..' segment"),
        ("..", "'..' segment"),
        ("*.[ch", "'[' without a closing ']'"),
        ("[]", "'[' without a closing ']'"),
        ("[!]", "'[' without a closing ']'"),
        ("onnx/", "write 'onnx/*'"),
        ("./config.json", "empty or '.' segment"),
        ("onnx//model.onnx", "empty or '.' segment"),
        ("onnx\\model.onnx", "repo paths use '/'"),
    ],
)
def test_bad_glob(tmp_path: Path, pattern: str, fragment: str) -> None:
    text = m(
        "version: 1", "models:", "  - repo: gpt2", "    exclude:", "      - '*.h5'", f"      - '{pattern}'"
    )
    err = load_bad(tmp_path, text)
    assert_error(err, tmp_path / "bad.yml", 6, "models[0].exclude[1]", fragment)


@pytest.mark.parametrize("pattern", ["[]]", "[!]]x", "*.[ch]", "[[]x", "x]", "**/*.bin", "onnx/*", "a[!/]b"])
def test_good_glob(pattern: str) -> None:
    spec = parse_manifest(m("version: 1", "models:", "  - repo: gpt2", f"    include: ['{pattern}']")).models[
        0
    ]
    assert spec.include == (pattern,)


@pytest.mark.parametrize(
    ("revision", "fragment"),
    [
        ("", "cannot be empty"),
        ("main branch", "whitespace"),
        ("main\\tx", "whitespace"),
        ("a..b", "'..'"),
        ("/main", "cannot start with '/' or '-'"),
        ("-main", "cannot start with '/' or '-'"),
        ("refs/pr/", "trailing '/'"),
        ("refs//pr", "'//'"),
        ("main@{1}", "'@{'"),
        ("main~1", "'~'"),
        ("HEAD^", "'^'"),
        ("v1:2", "':'"),
    ],
)
def test_bad_revision(tmp_path: Path, revision: str, fragment: str) -> None:
    err = load_bad(
        tmp_path, m("version: 1", "defaults:", f'  revision: "{revision}"', "models: [{repo: gpt2}]")
    )
    assert_error(err, tmp_path / "bad.yml", 3, "defaults.revision", fragment)


@pytest.mark.parametrize(
    ("endpoint", "fragment"),
    [
        ("hf-mirror.com", "http:// or https:// URL"),
        ("ftp://hf-mirror.com", "http:// or https:// URL"),
        ("https://", "http:// or https:// URL"),
        ("https:///path", "http:// or https:// URL"),
        ("https://user:secret@hf-mirror.com", "must not contain credentials"),
        ("https://hf-mirror.com/?a=1", "query or fragment"),
        ("https://hf-mirror.com:99999", "invalid port"),
        ("https://hf mirror.com", "whitespace"),
        ("", "http:// or https:// URL"),
    ],
)
def test_bad_endpoint(tmp_path: Path, endpoint: str, fragment: str) -> None:
    err = load_bad(tmp_path, m("version: 1", "models:", "  - repo: gpt2", f"    endpoint: '{endpoint}'"))
    assert_error(err, tmp_path / "bad.yml", 4, "models[0].endpoint", fragment)


@pytest.mark.parametrize("token_env", ["1HF_TOKEN", "hf_AbCdEf-123", "HF TOKEN", "$HF_TOKEN", ""])
def test_bad_token_env(tmp_path: Path, token_env: str) -> None:
    err = load_bad(
        tmp_path, m("version: 1", "defaults:", f"  token_env: '{token_env}'", "models: [{repo: gpt2}]")
    )
    assert_error(err, tmp_path / "bad.yml", 3, "defaults.token_env", "not an environment variable name")


def test_unreadable_and_non_utf8(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yml"
    with pytest.raises(ManifestError) as info:
        load_manifest(missing)
    assert (info.value.file, info.value.line) == (str(missing), None)
    assert "cannot read the manifest" in str(info.value)

    err = load_bad(tmp_path, b"version: 1\nmodels:\n  - repo: caf\xe9\n")
    assert_error(err, tmp_path / "bad.yml", None, None, "not UTF-8")


def test_parse_manifest_default_name() -> None:
    with pytest.raises(ManifestError, match=r"^<string>:1: version: "):
        parse_manifest("version: 3\n")


# --- good manifests ----------------------------------------------------------------------------------


def test_defaults_inherited_and_overridden() -> None:
    text = m(
        "version: 1",
        "defaults:",
        "  revisions: [main, v1.0]",
        "  include: ['*.json', '*.safetensors']",
        "  exclude: ['onnx/*']",
        "  token_env: MY_TOKEN",
        "  endpoint: https://hf-mirror.example.org/",
        "models:",
        "  - repo: org/inherits",
        "  - repo: org/overrides",
        "    revision: v2",
        "    include: []",
        "    exclude: ['*.h5']",
        "    token_env: OTHER_TOKEN",
        "    endpoint: http://10.0.0.1:8080/hub",
    )
    manifest = parse_manifest(text, "good.yml")
    assert manifest.path == "good.yml"
    inherits, overrides = manifest.models
    assert inherits == ModelSpec(
        repo="org/inherits",
        source="huggingface",
        revisions=("main", "v1.0"),
        include=("*.json", "*.safetensors"),
        exclude=("onnx/*",),
        repo_type="model",
        token_env="MY_TOKEN",
        endpoint="https://hf-mirror.example.org",
        hf_id=None,
        file="good.yml",
        line=9,
    )
    assert overrides == ModelSpec(
        repo="org/overrides",
        source="huggingface",
        revisions=("v2",),
        include=(),
        exclude=("*.h5",),
        token_env="OTHER_TOKEN",
        endpoint="http://10.0.0.1:8080/hub",
        file="good.yml",
        line=10,
    )


def test_default_revisions_per_source() -> None:
    text = m(
        "version: 1",
        "models:",
        "  - repo: gpt2",
        "  - repo: iic/nlp_structbert_backbone_base_std",
        "    source: modelscope",
        "    hf_id: iic/structbert-base",
        "  - repo: stanfordnlp/imdb",
        "    type: dataset",
    )
    gpt2, structbert, imdb = parse_manifest(text).models
    assert (gpt2.repo, gpt2.source, gpt2.revisions) == ("gpt2", "huggingface", ("main",))
    assert (structbert.source, structbert.revisions) == ("modelscope", ("master",))
    assert structbert.hf_id == "iic/structbert-base"
    assert (imdb.repo_type, imdb.revisions) == ("dataset", ("main",))
    assert {name: hub.default_revision for name, hub in HUBS.items()} == {
        "huggingface": "main",
        "modelscope": "master",
    }


def test_defaults_source_and_revision_apply_to_every_model() -> None:
    text = m("version: 1", "defaults: {source: modelscope, revision: v1.0.2}", "models:", "  - repo: iic/a")
    (spec,) = parse_manifest(text).models
    assert (spec.source, spec.revisions) == ("modelscope", ("v1.0.2",))


def test_singular_revision_and_commit_hash() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    text = m(
        "version: 1",
        "models:",
        "  - repo: org/a",
        "    revision: refs/pr/1",
        f"  - {{repo: org/b, revision: {sha}}}",
    )
    a, b = parse_manifest(text).models
    assert a.revisions == ("refs/pr/1",)
    assert b.revisions == (sha,)
    assert (a.line, b.line) == (3, 5)


def test_same_repo_allowed_across_sources_types_and_manifests(tmp_path: Path) -> None:
    text = m(
        "version: 1",
        "models:",
        "  - repo: org/name",
        "  - {repo: org/name, type: dataset}",
        "  - {repo: org/name, source: modelscope}",
    )
    specs = parse_manifest(text).models
    assert [str(s.key) for s in specs] == [
        "huggingface:org/name",
        "huggingface:dataset:org/name",
        "modelscope:org/name",
    ]
    first, second = tmp_path / "a.yml", tmp_path / "b.yml"
    first.write_text(m("version: 1", "models: [{repo: gpt2}]"))
    second.write_text(m("version: 1", "models: [{repo: gpt2, revision: v1}]"))
    loaded = load_manifests([first, str(second)])
    assert [man.path for man in loaded] == [str(first), str(second)]
    assert [man.models[0].revisions for man in loaded] == [("main",), ("v1",)]


def test_aliases_are_allowed() -> None:
    text = m(
        "version: 1",
        "models:",
        "  - repo: org/a",
        "    exclude: &weights ['*.h5', '*.msgpack']",
        "  - repo: org/b",
        "    exclude: *weights",
    )
    a, b = parse_manifest(text).models
    assert a.exclude == b.exclude == ("*.h5", "*.msgpack")


def test_explicit_str_tag_and_quoted_values() -> None:
    text = m("version: 1", "models:", "  - repo: !!str 1234", "    revision: '2024'", "    type: !!str model")
    (spec,) = parse_manifest(text).models
    assert (spec.repo, spec.revisions, spec.repo_type) == ("1234", ("2024",), "model")


WANTS = [
    # (include, exclude, path, wanted)
    ((), (), "config.json", True),
    ((), (), "onnx/model.onnx", True),
    ((), ("*.h5",), "tf_model.h5", False),
    ((), ("*.h5",), "sub/tf_model.h5", False),  # fnmatch "*" crosses "/"
    ((), ("onnx/*",), "onnx/model.onnx", False),
    ((), ("onnx/*",), "onnx/sub/deep.onnx", False),
    ((), ("onnx/*",), "model.onnx", True),
    ((), ("onnx/*",), "onnx", True),
    (("config.json",), (), "config.json", True),
    (("config.json",), (), "sub/config.json", False),  # no basename matching
    (("*.json",), (), "onnx/config.json", True),
    (("*.json", "*.safetensors"), (), "model.safetensors", True),
    (("*.json", "*.safetensors"), (), "pytorch_model.bin", False),
    (("*.json",), ("tokenizer*",), "tokenizer_config.json", False),  # exclude wins
    (("*.json",), ("tokenizer*",), "config.json", True),
    (("*.JSON",), (), "config.json", False),  # case-sensitive on every platform
    (("model-0000[1-2]-*.safetensors",), (), "model-00002-of-00003.safetensors", True),
    (("model-0000[1-2]-*.safetensors",), (), "model-00003-of-00003.safetensors", False),
    (("[!.]*",), (), ".gitattributes", False),
]


@pytest.mark.parametrize(("include", "exclude", "path", "wanted"), WANTS)
def test_wants(include: tuple[str, ...], exclude: tuple[str, ...], path: str, wanted: bool) -> None:
    spec = ModelSpec(
        repo="org/name", source="huggingface", revisions=("main",), include=include, exclude=exclude
    )
    assert spec.wants(path) is wanted


EXAMPLES = sorted(MANIFESTS_DIR.glob("*.yml"))


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"example.yml", "minilm.yml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_manifests_load(path: Path) -> None:
    manifest = load_manifest(path)
    assert isinstance(manifest, Manifest)
    assert manifest.models
    assert all(spec.file == str(path) and spec.line > 0 for spec in manifest.models)


def test_example_manifest_contents() -> None:
    example = {str(s.key): s for s in load_manifest(MANIFESTS_DIR / "example.yml").models}
    assert set(example) == {
        "huggingface:sentence-transformers/all-MiniLM-L6-v2",
        "huggingface:google-bert/bert-base-uncased",
        "huggingface:gpt2",
        "modelscope:iic/nlp_structbert_backbone_base_std",
    }
    bert = example["huggingface:google-bert/bert-base-uncased"]
    assert bert.wants("model.safetensors") and bert.wants("vocab.txt")
    assert not bert.wants("tf_model.h5") and not bert.wants("flax_model.msgpack")
    gpt2 = example["huggingface:gpt2"]
    assert gpt2.wants("model.safetensors") and not gpt2.wants("onnx/decoder_model.onnx")
    assert example["modelscope:iic/nlp_structbert_backbone_base_std"].revisions == ("master",)

    (minilm,) = load_manifest(MANIFESTS_DIR / "minilm.yml").models
    assert minilm.repo == "sentence-transformers/all-MiniLM-L6-v2"
    assert minilm.wants("model.safetensors") and minilm.wants("1_Pooling/config.json")
    assert not minilm.wants("onnx/model.onnx")
