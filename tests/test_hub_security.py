"""The hub's own scan (issue 15): the loopback hub answers it as the Hub does, only when asked, and
`HuggingFaceSource.hub_scan` turns what the hub flagged into `hub_flagged` findings in the hub's words,
with as few requests as the answer allows; a hub that does not report gives a note, never a failure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from huggingface_hub import HfApi

from mirror.settings import Settings
from mirror.sources import open_source
from mirror.sources.hub_scan import MAX_LISTED, MAX_WORD, HubScan, detail
from mirror.sources.huggingface import PATHS_INFO_BATCH, HuggingFaceSource
from mirror.sources.modelscope import ModelScopeSource
from mirror.validate.findings import Finding
from tests.hub import Fault, LoopbackHub

REPO = "org/scanned"
FILES = {
    "config.json": b'{"model_type": "bert"}',
    "pytorch_model.bin": b"not really a pickle",
    "model.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    "README.md": b"# scanned\n",
}
SYSTEM = [("posix", "system", "dangerous"), ("collections", "OrderedDict", "innocuous")]
UNSAFE = "the hub's scan: unsafe; pickle imports posix.system (dangerous)"


def source(hub: LoopbackHub, name: str = "huggingface") -> Any:
    settings = Settings.from_env(None, {"HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.url})
    return open_source(name, settings, endpoint=None, token_env=None)


def scan(hub: LoopbackHub, commit: str, paths: Any = None) -> HubScan:
    src = source(hub)
    assert isinstance(src, HuggingFaceSource)
    hub.clear_requests()
    return src.hub_scan(REPO, "model", commit, sorted(FILES) if paths is None else paths)


@pytest.fixture
def commit(hub: LoopbackHub) -> str:
    return hub.add_commit(REPO, FILES)


# ---- the loopback hub answers as the Hub, read by huggingface_hub itself ------------------------------------


def test_huggingface_hub_reads_the_loopback_hubs_file_status_only_with_expand(
    hub: LoopbackHub, commit: str
) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.set_security(REPO, "README.md", status="safe")
    api = HfApi(endpoint=hub.url)
    tree = {f.path: f for f in api.list_repo_tree(REPO, revision=commit, expand=True)}
    security = tree["pytorch_model.bin"].security  # type: ignore[union-attr]
    assert security is not None and security.status == "unsafe" and not security.safe
    assert security.pickle_import_scan == {
        "status": "unsafe",
        "pickleImports": [
            {"module": "posix", "name": "system", "safety": "dangerous"},
            {"module": "collections", "name": "OrderedDict", "safety": "innocuous"},
        ],
    }
    assert tree["README.md"].security.safe  # type: ignore[union-attr]
    assert tree["config.json"].security.status == "unscanned"  # type: ignore[union-attr]
    plain = {f.path: f for f in api.list_repo_tree(REPO, revision=commit)}
    assert plain["pytorch_model.bin"].security is None  # type: ignore[union-attr]
    (info,) = api.get_paths_info(REPO, ["pytorch_model.bin"], revision=commit, expand=True)
    assert info.security.status == "unsafe"  # type: ignore[union-attr]
    (bare,) = api.get_paths_info(REPO, ["pytorch_model.bin"], revision=commit)
    assert bare.security is None  # type: ignore[union-attr]


def test_huggingface_hub_reads_the_loopback_hubs_repo_status_only_when_asked(
    hub: LoopbackHub, commit: str
) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.set_security(REPO, "README.md", status="safe")
    hub.set_security(REPO, "config.json", status="queued")
    api = HfApi(endpoint=hub.url)
    info = api.model_info(REPO, revision=commit, securityStatus=True)
    assert info.security_repo_status == {
        "scansDone": True,
        "filesWithIssues": [{"path": "pytorch_model.bin", "level": "unsafe"}],
    }
    assert api.model_info(REPO, revision=commit).security_repo_status is None
    expanded = api.model_info(REPO, revision=commit, expand=["securityRepoStatus"])  # type: ignore[list-item]
    assert expanded.security_repo_status is not None and expanded.siblings is None  # only what was named


def test_the_legacy_shape_is_the_one_huggingface_hub_documents(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(
        REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM, virus="Eicar", legacy=True
    )
    api = HfApi(endpoint=hub.url)
    (info,) = api.get_paths_info(REPO, ["pytorch_model.bin"], revision=commit, expand=True)
    assert info.security.av_scan == {"virusFound": True, "virusNames": ["Eicar"]}  # type: ignore[union-attr]
    assert info.security.pickle_import_scan["highestSafetyLevel"] == "dangerous"  # type: ignore[union-attr,index]


# ---- mirror's source: findings in the hub's words, few requests ---------------------------------------------


def test_a_clean_revision_costs_one_request_and_gives_nothing(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "README.md", status="safe")
    assert scan(hub, commit) == HubScan()
    (request,) = hub.requests
    assert (
        request.method == "GET"
        and request.path == f"/api/models/{REPO}/revision/{commit}?securityStatus=true"
    )


def test_a_file_the_hub_flags_is_a_finding_in_its_words(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    result = scan(hub, commit)
    assert result == HubScan((Finding("pytorch_model.bin", "hub_flagged", UNSAFE),))
    assert [r.method for r in hub.requests] == ["GET", "POST"]
    assert hub.requests[1].path == f"/api/models/{REPO}/paths-info/{commit}"


def test_the_hubs_antivirus_is_named(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "model.safetensors", status="unsafe", virus="Eicar-Test-Signature")
    (found,) = scan(hub, commit).findings
    assert found.detail == "the hub's scan: unsafe; the hub's antivirus: virus found (Eicar-Test-Signature)"


def test_the_legacy_shape_gives_the_same_words(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(
        REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM, virus="Eicar", legacy=True
    )
    (found,) = scan(hub, commit).findings
    assert found.detail == f"{UNSAFE}; the hub's antivirus: virus found (Eicar)"


@pytest.mark.parametrize("status", ["safe", "unscanned", "queued", "error", None])
def test_a_file_safe_or_not_scanned_gives_no_finding(
    hub: LoopbackHub, commit: str, status: str | None
) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status=status)
    assert scan(hub, commit).findings == ()


@pytest.mark.parametrize("status", ["caution", "suspicious"])
def test_caution_and_suspicious_are_flags(hub: LoopbackHub, commit: str, status: str) -> None:
    hub.set_security(
        REPO, "pytorch_model.bin", status=status, pickle_imports=[("torch", "load", "suspicious")]
    )
    (found,) = scan(hub, commit).findings
    assert found.detail == f"the hub's scan: {status}; pickle imports torch.load (suspicious)"


def test_only_the_files_asked_about_are_findings(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    assert scan(hub, commit, ["config.json", "README.md"]) == HubScan()
    assert len(hub.requests) == 1  # nothing flagged among them: no detail asked


def test_flagged_files_are_detailed_in_batches(hub: LoopbackHub) -> None:
    names = [f"shard-{i:03}.bin" for i in range(PATHS_INFO_BATCH + 3)]
    commit = hub.add_commit(REPO, {name: b"x" for name in names})
    for name in names:
        hub.set_security(REPO, name, status="unsafe", pickle_imports=SYSTEM)
    result = scan(hub, commit, names)
    assert [f.path for f in result.findings] == names
    assert {f.detail for f in result.findings} == {UNSAFE}
    assert [r.method for r in hub.requests] == ["GET", "POST", "POST"]


def test_scans_not_done_is_noted_beside_what_is_flagged(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.scans_done = False
    result = scan(hub, commit)
    assert [f.detail for f in result.findings] == [UNSAFE]
    (note,) = result.notes
    assert "has not finished scanning" in note


# ---- a hub that does not report: a note, never a failure ----------------------------------------------------


def test_a_hub_that_does_not_report_gives_a_note(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.reports_security = False
    result = scan(hub, commit)
    assert result.findings == ()
    (note,) = result.notes
    assert note.endswith("the hub does not report a scan of its own") and REPO in note


@pytest.mark.parametrize("status", [500, 404, 403])
def test_a_failed_repo_info_gives_a_note(hub: LoopbackHub, commit: str, status: int) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.add_fault(Fault("status", match="securityStatus", status=status))
    result = scan(hub, commit)
    assert result.findings == ()
    (note,) = result.notes
    assert note.startswith("the hub's own scan was not read: ") and f"HTTP {status}" in note


def test_a_failed_detail_keeps_the_hubs_level(hub: LoopbackHub, commit: str) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.add_fault(Fault("status", match="paths-info", status=500))
    result = scan(hub, commit)
    assert result.findings == (Finding("pytorch_model.bin", "hub_flagged", "the hub's scan: unsafe"),)
    (note,) = result.notes
    assert "its level is recorded" in note


def test_modelscope_reports_no_scan_and_asks_nothing(hub: LoopbackHub, commit: str) -> None:
    src = source(hub, "modelscope")
    assert isinstance(src, ModelScopeSource)
    hub.clear_requests()
    result = src.hub_scan(REPO, "model", commit, sorted(FILES))
    assert result.findings == () and hub.requests == []
    (note,) = result.notes
    assert "ModelScope does not report a scan of its own" in note


# ---- hostile answers: skipped or bounded, never raised on --------------------------------------------------

HOSTILE_REPO_STATUS: list[Any] = [
    [],
    "unsafe",
    {"filesWithIssues": "pytorch_model.bin"},
    {"filesWithIssues": [None, 3, {"path": 7}, {"path": ["pytorch_model.bin"]}]},
    {"filesWithIssues": [{"path": "pytorch_model.bin", "level": {"deep": [1]}}]},
    {"filesWithIssues": [{"path": "../../etc/passwd", "level": "unsafe"}]},
]


@pytest.mark.parametrize("value", HOSTILE_REPO_STATUS)
def test_a_hostile_repo_status_never_raises(hub: LoopbackHub, commit: str, value: Any) -> None:
    def rewrite(body: bytes) -> bytes:
        return json.dumps({**json.loads(body), "securityRepoStatus": value}).encode()

    hub.add_fault(Fault("body", match="securityStatus", body=rewrite))
    result = scan(hub, commit)
    assert all(f.path in FILES and f.kind == "hub_flagged" for f in result.findings)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        b'[{"path": "pytorch_model.bin", "securityFileStatus": [1]}]',
        b"[" * 100 + b"]" * 100,
    ],
)
def test_a_hostile_detail_keeps_the_level(hub: LoopbackHub, commit: str, body: bytes) -> None:
    hub.set_security(REPO, "pytorch_model.bin", status="unsafe", pickle_imports=SYSTEM)
    hub.add_fault(Fault("body", match="paths-info", body=body))
    (found,) = scan(hub, commit).findings
    assert found.detail == "the hub's scan: unsafe"


def test_the_hubs_words_are_bounded() -> None:
    long = "x" * 100_000
    status = {
        "status": long,
        "avScan": {"virusFound": True, "virusNames": [long] * 1000},
        "pickleImportScan": {
            "pickleImports": [{"module": long, "name": "n", "safety": "dangerous"}] * 10_000
        },
    }
    words = detail(status)
    assert words is not None and len(words) < 3 * (MAX_LISTED + 1) * (2 * MAX_WORD + 20)
    assert f"and {10_000 - MAX_LISTED} more" in words and f"and {1000 - MAX_LISTED} more" in words


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"status": "safe", "avScan": {"status": "safe"}, "pickleImportScan": {"status": "unscanned"}}, None),
        ({"status": "unsafe"}, "the hub's scan: unsafe"),
        ({"status": "a-new-word"}, "the hub's scan: a-new-word"),  # deny by default: shown as written
        (
            {"status": "unsafe", "pickleImportScan": {"highestSafetyLevel": "dangerous", "imports": []}},
            "the hub's scan: unsafe; pickle imports rated dangerous",
        ),
        (
            {"status": "safe", "jFrogScan": {"status": "unsafe", "message": "code execution"}},
            "JFrog's scan: unsafe (code execution)",
        ),
        ({"status": "safe", "protectAiScan": {"status": "caution"}}, "Protect AI's scan: caution"),
        ({"status": "safe", "avScan": {"virusFound": False, "virusNames": None}}, None),
        ("unsafe", None),
        (None, None),
    ],
)
def test_the_words_of_each_shape(status: Any, words: str | None) -> None:
    assert detail(status) == words
