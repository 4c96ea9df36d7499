"""A sync isolates every failure to its model revision: broken hubs and proxies, hostile listings, unexpected
exceptions in a source. The other revisions are synced and recorded; the failing one is never recorded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.exits import ExitCode
from mirror.manifest import parse_manifest
from mirror.paths import tree_problems
from mirror.repo import RepoKey, RevisionRequest
from mirror.settings import Settings
from mirror.sources import Source
from mirror.sources.hub_scan import HubScan
from mirror.store import Store
from mirror.sync import SourceFactory, SyncReport, default_source_factory, plan_targets, sync
from mirror.verify import verify_store
from tests.hub import Fault, GarbageServer, HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.test_sync import FAST

GOOD = RepoKey("huggingface", "model", "org/good")
BAD = "org/bad"
WEIGHTS = safetensors_sized(bytes(range(256)) * 1024)
BAD_FILES = {"config.json": b'{"bad": true}', "sub/file.txt": b"x" * 100}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.at(tmp_path / "store", clock=SYSTEM)


def serve(hub: LoopbackHub) -> None:
    hub.add_commit(
        "org/good", [HubFile("config.json", data=b"{}"), HubFile("model.safetensors", data=WEIGHTS)]
    )
    hub.add_commit(BAD, BAD_FILES)


def run(
    store: Store,
    hub: LoopbackHub,
    bad: str = "",
    factory: Callable[[SourceFactory], SourceFactory] | None = None,
) -> SyncReport:
    """Sync org/good and org/bad (`bad`: more manifest lines for org/bad)."""
    manifest = f"version: 1\nmodels:\n  - repo: org/good\n  - repo: {BAD}\n{bad}"
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.url})
    sources = default_source_factory(settings)
    if factory is not None:
        sources = factory(sources)
    return sync(store, plan_targets(parse_manifest(manifest).requests()), sources, policy=FAST)


def assert_bad_fails_alone(
    store: Store, report: SyncReport, source: str = "huggingface", code: ExitCode = ExitCode.PARTIAL
) -> str:
    """org/good synced, verified and recorded; org/bad failed and never recorded; its error message. The
    run's exit code is partial, or integrity for a hostile listing: damage is never reported as partial."""
    good, bad = report.items
    assert report.exit_code == code, report.to_json()
    assert good.error is None and good.recorded and len(good.records) == 2
    assert store.read_refs(GOOD)["main"].commit == good.commit
    assert bad.error is not None and not bad.recorded
    assert store.read_refs(RepoKey(source, "model", BAD)) == {}
    assert not (store.local_root / "repos" / source / "model" / "org--bad").exists()
    assert verify_store(store).ok
    json.dumps(report.to_json())  # the report can be written
    return str(bad.error)


def rewrite_json(change: Callable[[Any], Any]) -> Callable[[bytes], bytes]:
    return lambda body: json.dumps(change(json.loads(body))).encode()


def with_siblings(*extra: dict[str, Any]) -> Callable[[bytes], bytes]:
    """The HF listing with more siblings."""
    return rewrite_json(lambda info: {**info, "siblings": info["siblings"] + list(extra)})


def sibling(path: str) -> dict[str, Any]:
    return {"rfilename": path, "size": 1, "blobId": "a" * 40}


LISTING = "/api/models/org/bad/"
FILES = "/org/bad/resolve/"
MS_LISTING = "/api/v1/models/org/bad/repo/files"
MS_FILES = "/api/v1/models/org/bad/repo?"

# (what goes wrong, the fault, words the error must say)
HF_FAULTS = [
    ("a redirect loop on the listing", Fault("redirect", match=LISTING, times=None), "redirect"),
    ("a redirect loop on a file", Fault("redirect", match=FILES, times=None), "redirect"),
    ("a gzip label on a plain file", Fault("encoding", match=FILES, encoding="gzip", times=None), "decoded"),
    (
        "a deflate label on a plain file",
        Fault("encoding", match=FILES, encoding="deflate", times=None),
        "decoded",
    ),
    (
        "a gzip label on a plain listing",
        Fault("encoding", match=LISTING, encoding="gzip", times=None),
        "decoded",
    ),
    (
        "a listing that is not UTF-8",
        Fault("body", match=LISTING, body=b'{"sha": "\xff\xfe\xfd"}', times=None),
        "JSON",
    ),
    (
        "a listing that is a JSON list",
        Fault("body", match=LISTING, body=b"[1, 2, 3]", times=None),
        "repo's info",
    ),
    (
        "a commit that is a number",
        Fault("body", match=LISTING, body=rewrite_json(lambda i: {**i, "sha": 12345}), times=None),
        "commit",
    ),
    (
        "a size that is not a number",
        Fault(
            "body", match=LISTING, body=with_siblings({"rfilename": "x", "size": "big", "blobId": "a" * 40})
        ),
        "size",
    ),
    (
        "a negative size",
        Fault("body", match=LISTING, body=with_siblings({"rfilename": "x", "size": -5, "blobId": "a" * 40})),
        "size",
    ),
    (
        "a git oid that is not a hash",
        Fault("body", match=LISTING, body=with_siblings({"rfilename": "x", "size": 1, "blobId": ["no"]})),
        "hash",
    ),
    (
        "a file with no hash at all",
        Fault("body", match=LISTING, body=with_siblings({"rfilename": "x", "size": 1})),
        "hash",
    ),
    (
        "a truncated listing",
        Fault("body", match=LISTING, body=lambda b: b[: len(b) // 2], times=None),
        "JSON",
    ),
    ("a listing cut off mid-body", Fault("cut", match=LISTING, times=None), "connection failed"),
    ("garbage instead of the listing", Fault("garbage", match=LISTING, times=None), "connection failed"),
    ("garbage instead of a file", Fault("garbage", match=FILES, times=None), "connection failed"),
]


@pytest.mark.parametrize(("what", "fault", "says"), HF_FAULTS, ids=[c[0] for c in HF_FAULTS])
def test_a_broken_hub_fails_its_revision_alone(
    hub: LoopbackHub, store: Store, what: str, fault: Fault, says: str
) -> None:
    serve(hub)
    hub.add_fault(fault)
    error = assert_bad_fails_alone(store, run(store, hub))
    assert says in error and BAD in error


MS_FAULTS = [
    ("a redirect loop on the listing", Fault("redirect", match=MS_LISTING, times=None), "redirect"),
    (
        "a gzip label on a plain file",
        Fault("encoding", match=MS_FILES, encoding="gzip", times=None),
        "decoded",
    ),
    (
        "a listing that is not UTF-8",
        Fault("body", match=MS_LISTING, body=b"\xff\xfe{}", times=None),
        "ModelScope",
    ),
    (
        "entries of the wrong shape",
        Fault("body", match=MS_LISTING, body=rewrite_json(lambda p: {**p, "Data": {"Files": [1, "x"]}})),
        "ModelScope",
    ),
    (
        "a size that is not a number",
        Fault(
            "body",
            match=MS_LISTING,
            body=rewrite_json(
                lambda p: {**p, "Data": {"Files": [{**e, "Size": "big"} for e in p["Data"]["Files"]]}}
            ),
        ),
        "ModelScope",
    ),
    ("garbage instead of a file", Fault("garbage", match=MS_FILES, times=None), "connection failed"),
]


@pytest.mark.parametrize(("what", "fault", "says"), MS_FAULTS, ids=[c[0] for c in MS_FAULTS])
def test_a_broken_modelscope_hub_fails_its_revision_alone(
    hub: LoopbackHub, store: Store, what: str, fault: Fault, says: str
) -> None:
    serve(hub)
    hub.add_fault(fault)
    error = assert_bad_fails_alone(store, run(store, hub, "    source: modelscope\n"), "modelscope")
    assert says in error and BAD in error


@pytest.mark.parametrize("encoding", ["br", "zstd", "x-unknown"])
def test_a_content_encoding_the_client_cannot_decode_never_stores_wrong_bytes(
    hub: LoopbackHub, store: Store, encoding: str
) -> None:
    # httpx2 passes a body through undecoded when it has no decoder for its label (br without brotli, zstd
    # without its extra) and decodes it when it has: either way the bytes are checked against the hub's
    # hash, so the revision is synced right or fails alone.
    serve(hub)
    hub.add_fault(Fault("encoding", match=FILES, encoding=encoding, times=None))
    hub.add_fault(Fault("encoding", match=LISTING, encoding=encoding, times=None))
    report = run(store, hub)
    assert report.exit_code in (0, 3)
    assert report.items[0].recorded and verify_store(store).ok


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_an_endpoint_that_speaks_garbage_or_fails_tls_fails_its_revisions_alone(
    hub: LoopbackHub, store: Store, scheme: str
) -> None:
    serve(hub)
    with GarbageServer() as garbage:
        error = assert_bad_fails_alone(store, run(store, hub, f"    endpoint: {garbage.url(scheme)}\n"))
    assert "connection failed" in error and "giving up" in error
    if scheme == "https":
        assert "SSL" in error  # the TLS handshake is what failed


class Broken:
    """A real source that raises a plain Python exception for org/bad where `where` says."""

    def __init__(self, real: Source, where: str) -> None:
        self.real, self.where, self.name = real, where, real.name

    def resolve(self, repo_id: str, repo_type: str, revision: str) -> Any:
        if repo_id == BAD and self.where == "resolve":
            raise ValueError("a bug in the listing parser")
        return self.real.resolve(repo_id, repo_type, revision)

    def commit_of(self, repo_id: str, repo_type: str, revision: str) -> str | None:
        return self.real.commit_of(repo_id, repo_type, revision)

    def file_request(self, repo_id: str, repo_type: str, commit: str, path: str) -> Any:
        if repo_id == BAD and self.where == "file_request":
            raise RuntimeError("a bug in the url builder")
        return self.real.file_request(repo_id, repo_type, commit, path)

    def hub_scan(self, repo_id: str, repo_type: str, commit: str, paths: Iterable[str]) -> HubScan:
        return self.real.hub_scan(repo_id, repo_type, commit, paths)


@pytest.mark.parametrize("where", ["resolve", "file_request", "factory"])
def test_a_plain_python_exception_in_a_source_fails_its_revision_alone(
    hub: LoopbackHub, store: Store, where: str
) -> None:
    serve(hub)

    def broken(real: SourceFactory) -> SourceFactory:
        def factory(request: RevisionRequest) -> Source:
            if where == "factory" and request.key.repo_id == BAD:
                raise KeyError("no client for this spec")
            return Broken(real(request), where)

        return factory

    error = assert_bad_fails_alone(store, run(store, hub, factory=broken))
    assert "unexpected" in error and ("Error" in error)


# ---- listings that cannot be a real tree --------------------------------------------------------


@pytest.mark.parametrize(
    ("paths", "named"),
    [
        (["a", "b", "a"], ["'a' listed twice"]),
        (["a", "a/b"], ["'a' is a file and also the folder of 'a/b'"]),
        (["x/y", "x/y/z/w", "q"], ["'x/y'", "'x/y/z/w'"]),
        (["/etc/passwd"], ["'/etc/passwd'"]),
        (["../escape"], ["'../escape'"]),
        (["a/../../b"], ["'a/../../b'"]),
        (["a//b"], ["'a//b'"]),
        (["a/./b"], ["'a/./b'"]),
        (["dir\\file"], ["'dir\\\\file'"]),
        (["nul\x00byte"], ["'nul\\x00byte'"]),
        (["new\nline"], ["'new\\nline'"]),
        ([""], ["unsafe name ''"]),
        (["ok/" + "n" * 256], ["is too long: 256 bytes"]),
        (["é" * 128], ["is too long: 256 bytes"]),  # 256 bytes in UTF-8
        (["bad\ud800surrogate"], ["unsafe name"]),
    ],
)
def test_tree_problems_name_the_paths(paths: list[str], named: list[str]) -> None:
    problems = "; ".join(tree_problems(paths))
    for words in named:
        assert words in problems


def test_a_real_tree_has_no_problems() -> None:
    tree = [
        "README.md",
        "readme.md",
        "a/b/c.txt",
        "a/b/d.txt",
        "a/bc",
        "ab/c",
        "n" * 255,
        "é" * 127,
        "üñí/cödé",
    ]
    assert tree_problems(tree) == []


def test_a_hostile_listing_names_at_most_ten_problems() -> None:
    problems = tree_problems([f"../{i}" for i in range(1000)])
    assert len(problems) == 11 and problems[-1] == "and 990 more"


HOSTILE = [
    ("the same path twice", [sibling("config.json")], "'config.json' listed twice"),
    (
        "a file that is also a folder",
        [sibling("sub")],
        "'sub' is a file and also the folder of 'sub/file.txt'",
    ),
    ("an absolute path", [sibling("/etc/cron.d/evil")], "'/etc/cron.d/evil'"),
    ("a parent reference", [sibling("../../outside")], "'../../outside'"),
    ("an empty component", [sibling("sub//x")], "'sub//x'"),
    ("a backslash", [sibling("sub\\x")], "'sub\\\\x'"),
    ("a control character", [sibling("a\x1bb")], "'a\\x1bb'"),
    ("a NUL", [sibling("a\x00b")], "'a\\x00b'"),
    ("a name over 255 bytes", [sibling("d/" + "x" * 300)], "is too long: 300 bytes"),
    ("an empty name", [sibling("")], "unsafe name ''"),
]


@pytest.mark.parametrize(("what", "extra", "named"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_a_listing_that_cannot_be_a_tree_fails_its_revision_alone(
    hub: LoopbackHub, store: Store, what: str, extra: list[dict[str, Any]], named: str
) -> None:
    serve(hub)
    hub.add_fault(Fault("body", match=LISTING, body=with_siblings(*extra), times=None))
    error = assert_bad_fails_alone(store, run(store, hub), code=ExitCode.INTEGRITY)
    assert named in error and "cannot be a real folder tree" in error
    assert isinstance(run(store, hub).items[1].error, IntegrityError)  # refused again, never half-recorded
    assert not [r for r in hub.downloads() if FILES in r.path]  # nothing of it was fetched


def test_a_hostile_modelscope_listing_fails_its_revision_alone(hub: LoopbackHub, store: Store) -> None:
    serve(hub)

    def duplicate(payload: Any) -> Any:
        files = payload["Data"]["Files"]
        return {**payload, "Data": {"Files": files + [f for f in files if f["Type"] == "blob"][:1]}}

    hub.add_fault(Fault("body", match=MS_LISTING, body=rewrite_json(duplicate), times=None))
    error = assert_bad_fails_alone(
        store, run(store, hub, "    source: modelscope\n"), "modelscope", ExitCode.INTEGRITY
    )
    assert "'config.json' listed twice" in error


def test_names_that_differ_only_in_case_are_synced(hub: LoopbackHub, store: Store) -> None:
    hub.add_commit("org/case", {"README.md": b"upper", "readme.md": b"lower", "Sub/a": b"1", "sub/a": b"2"})
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    targets = plan_targets(parse_manifest("version: 1\nmodels:\n  - repo: org/case\n").requests())
    report = sync(store, targets, default_source_factory(settings), policy=FAST)
    assert report.exit_code == 0 and len(report.items[0].records) == 4


def test_other_commands_keep_working_after_a_hostile_listing(
    hub: LoopbackHub, store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mirror.cli import main

    serve(hub)
    hub.add_fault(
        Fault("body", match=LISTING, body=with_siblings(sibling("sub"), sibling("../x")), times=None)
    )
    assert_bad_fails_alone(store, run(store, hub), code=ExitCode.INTEGRITY)
    capsys.readouterr()
    for args in (
        ["status", "--store", str(store.local_root)],
        ["verify", "--store", str(store.local_root)],
        ["export", "--store", str(store.local_root), "-o", str(tmp_path / "out.tar.zst")],
        ["gc", "--dry-run", "--store", str(store.local_root)],
    ):
        with pytest.raises(SystemExit) as done:
            main(args)
        assert done.value.code == 0, (args, capsys.readouterr())
    assert "org/good" in capsys.readouterr().out


def test_a_revision_the_store_cannot_plan_fails_alone(
    hub: LoopbackHub, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(hub)
    unreadable = hashlib.sha256(BAD_FILES["sub/file.txt"]).hexdigest()
    has_blob = Store.has_blob

    def denied(self: Store, sha256: str, size: int | None = None) -> bool:
        if sha256 == unreadable:  # a blob folder this user may not read
            raise PermissionError(13, "Permission denied", str(self.local_blob(sha256)))
        return has_blob(self, sha256, size)

    monkeypatch.setattr(Store, "has_blob", denied)
    error = assert_bad_fails_alone(store, run(store, hub, "    source: modelscope\n"), "modelscope")
    assert "PermissionError" in error and unreadable in error
