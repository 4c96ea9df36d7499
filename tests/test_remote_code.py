"""mirror.validate.remote_code (fast tier): *.py files, auto_map entries read as transformers reads them
(local, from another repo, a tokenizer's [slow, fast] pair, the legacy list form), the other repos
referenced, and hostile config files giving findings, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mirror.bounded import MODEL_CONFIG
from mirror.validate.findings import Finding
from mirror.validate.remote_code import MAX_REFERENCES, RemoteCode, check_remote_code


def check(files: dict[str, Any]) -> RemoteCode:
    """check_remote_code on a revision whose files are given as their contents (bytes, or JSON values)."""
    blobs = {
        path: value if isinstance(value, bytes) else json.dumps(value).encode()
        for path, value in files.items()
    }
    reads: list[str] = []

    def read(path: str) -> bytes | None:
        reads.append(path)
        return blobs[path]

    result = check_remote_code({path: len(blob) for path, blob in blobs.items()}, read)
    assert all(f.kind == "remote_code" for f in result.findings)
    assert set(reads) <= {p for p in blobs if p.endswith(".json")}  # only config files are read
    return result


def details(result: RemoteCode) -> list[tuple[str, str]]:
    return [(f.path, f.detail) for f in result.findings]


def test_a_plain_model_has_no_remote_code() -> None:
    result = check({"config.json": {"model_type": "bert"}, "model.safetensors": b"x", "README.md": b"# hi"})
    assert result == RemoteCode((), ())


def test_every_py_file_is_flagged() -> None:
    result = check({"modeling_x.py": b"import os", "sub/tok.py": b"", "setup.PY": b"", "notes.txt": b""})
    assert [f.path for f in result.findings] == ["modeling_x.py", "setup.PY", "sub/tok.py"]
    assert "Python code" in result.findings[0].detail


def test_auto_map_in_this_repo() -> None:
    config = {"auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModel": "modeling_x.XModel"}}
    result = check({"config.json": config, "configuration_x.py": b"", "modeling_x.py": b""})
    assert result.repos == ()
    assert (
        "config.json",
        "config.json auto_map 'AutoModel': class 'XModel' of 'modeling_x.py' in this repo",
    ) in (details(result))
    assert len(result.findings) == 4  # two entries, two .py files


def test_auto_map_naming_a_module_the_revision_lacks_says_so() -> None:
    result = check({"config.json": {"auto_map": {"AutoModel": "modeling_x.XModel"}}})
    assert result.findings[0].detail.endswith("in this repo, which is not in this revision")


def test_a_module_beside_a_config_in_a_subfolder_is_found() -> None:
    result = check({"text/config.json": {"auto_map": {"AutoModel": "m.M"}}, "text/m.py": b""})
    assert "not in this revision" not in result.findings[1].detail


def test_auto_map_from_another_repo_names_it() -> None:
    result = check({"config.json": {"auto_map": {"AutoModel": "org/other--modeling.Model"}}})
    assert result.repos == ("org/other",)
    assert details(result) == [
        (
            "config.json",
            "config.json auto_map 'AutoModel': class 'Model' of 'modeling.py' from another repo, org/other",
        )
    ]


def test_tokenizer_auto_map_slow_fast_pair() -> None:
    tok = {"auto_map": {"AutoTokenizer": ["org/tok--tokenization.SlowTok", "tokenization_fast.FastTok"]}}
    result = check({"tokenizer_config.json": tok, "tokenization_fast.py": b""})
    assert result.repos == ("org/tok",)
    assert [d for path, d in details(result) if path == "tokenizer_config.json"] == [
        "tokenizer_config.json auto_map 'AutoTokenizer': class 'SlowTok' of 'tokenization.py' from another repo, "
        "org/tok",
        "tokenizer_config.json auto_map 'AutoTokenizer': class 'FastTok' of 'tokenization_fast.py' in this repo",
    ]


def test_tokenizer_pair_with_a_null_and_the_legacy_list_form() -> None:
    result = check(
        {
            "a/tokenizer_config.json": {"auto_map": {"AutoTokenizer": [None, "org/fast--tok.Fast"]}},
            "b/tokenizer_config.json": {"auto_map": ["org/slow--tok.Slow", None]},  # legacy: the pair itself
        }
    )
    assert result.repos == ("org/fast", "org/slow")
    assert [f.path for f in result.findings] == ["a/tokenizer_config.json", "b/tokenizer_config.json"]


def test_every_config_that_transformers_reads_an_auto_map_from() -> None:
    files = {
        name: {"auto_map": {"AutoProcessor": f"org/{name.split('.')[0].replace('_', '-')}--p.P"}}
        for name in ("preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json")
    }
    files["other.json"] = {"auto_map": {"AutoModel": "org/never--m.M"}}  # not a config transformers reads
    assert check(files).repos == (
        "org/preprocessor-config",
        "org/processor-config",
        "org/video-preprocessor-config",
    )


def test_the_same_repo_referenced_twice_is_listed_once() -> None:
    config = {"auto_map": {"AutoConfig": "org/o--c.C", "AutoModel": "org/o--m.M"}}
    assert check({"config.json": config}).repos == ("org/o",)


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        ("a/b--c--d.E", "more than one '--'"),  # transformers: too many values to unpack
        ("modeling.sub.Model", "is not 'module.Class'"),
        ("Model", "is not 'module.Class'"),
        ("org/x--Model", "is not 'module.Class'"),
        (42, "42 is not a class reference"),
        ({"a": 1}, "is not a class reference"),
        ("../../etc--m.M", "which is not a repo id"),
        ("org/a/b--m.M", "which is not a repo id"),
    ],
)
def test_malformed_references_are_findings(ref: Any, fragment: str) -> None:
    result = check({"config.json": {"auto_map": {"AutoModel": ref}}})
    assert result.repos == ()
    assert len(result.findings) == 1
    assert fragment in result.findings[0].detail


def test_untrusted_text_is_quoted_and_cut() -> None:
    result = check({"config.json": {"auto_map": {"Auto\x1b[2J\u202e": "x" * 1000 + ".M"}}})
    detail = result.findings[0].detail
    assert "\x1b" not in detail and "\u202e" not in detail
    assert "\\x1b" in detail
    assert len(detail) < 400


@pytest.mark.parametrize(
    ("blob", "fragment"),
    [
        (b"[1, 2]", "is not a JSON object"),
        (b'"text"', "is not a JSON object"),
        (b"{", "is not valid JSON"),
        (b"\xff\xfe{}", "is not valid JSON (not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"a":' * (MODEL_CONFIG.depth + 1) + b"1" + b"}" * (MODEL_CONFIG.depth + 1), "nested deeper"),
        (b'{"auto_map": "m.M"}', "neither an object nor a list"),
        (b'{"auto_map": 7}', "neither an object nor a list"),
    ],
)
def test_hostile_config_is_a_finding(blob: bytes, fragment: str) -> None:
    result = check({"config.json": blob})
    assert len(result.findings) == 1
    assert fragment in result.findings[0].detail


def test_a_config_over_the_bound_is_not_read() -> None:
    def read(path: str) -> bytes | None:
        raise AssertionError("read a config over the bound")

    result = check_remote_code({"config.json": MODEL_CONFIG.size + 1}, read)
    assert result.findings == (
        Finding(
            "config.json",
            "remote_code",
            f"config.json is {MODEL_CONFIG.size + 1} bytes, over the {MODEL_CONFIG.size}-byte bound: not read, "
            "its auto_map, if any, is unknown",
        ),
    )


def test_a_reader_that_returns_more_than_the_bound_or_nothing() -> None:
    big = check_remote_code({"config.json": 2}, lambda path: b" " * (MODEL_CONFIG.size + 1))
    assert "over the" in big.findings[0].detail
    gone = check_remote_code({"tokenizer_config.json": 2}, lambda path: None)
    assert (
        gone.findings[0].detail == "tokenizer_config.json could not be read: its auto_map, if any, is unknown"
    )


def test_a_huge_auto_map_is_listed_up_to_the_cap() -> None:
    auto_map = {f"Auto{i}": f"org/r{i}--m.M" for i in range(MAX_REFERENCES + 10)}
    result = check({"config.json": {"auto_map": auto_map}})
    assert len(result.findings) == MAX_REFERENCES + 1
    assert len(result.repos) == MAX_REFERENCES
    assert f"has {MAX_REFERENCES + 10} class references" in result.findings[-1].detail


def test_a_huge_bad_repo_part_is_cut_in_the_finding() -> None:
    result = check({"config.json": {"auto_map": {"AutoModel": "a/b/" * 10_000 + "--m.M"}}})
    assert "which is not a repo id" in result.findings[0].detail
    assert len(result.findings[0].detail) < 500
