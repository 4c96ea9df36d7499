"""trees/<commit>.json for filtered imports: the commit's complete listing travels from the hub through the
store and the bundle index into the HF cache, so offline clients answer as on their own filtered caches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mirror.bundle import read_index, select_all, select_requests, write_bundle
from mirror.bundle.index import BundleIndex
from mirror.clock import SYSTEM
from mirror.errors import IntegrityError
from mirror.importing import import_bundle
from mirror.manifest import ModelSpec, parse_manifest
from mirror.repo import RepoKey
from mirror.retry import RetryPolicy
from mirror.settings import Settings
from mirror.sources import RemoteFile, RemoteSnapshot
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, remote_listing, sync
from tests.clocks import NO_WAIT
from tests.conftest import TINY_MAIN, SampleStore, put_repo
from tests.hub import HubFile, LoopbackHub
from tests.modelfiles import safetensors_sized

FAST = RetryPolicy(clock=NO_WAIT, attempts=2, base=0.01, cap=0.05, total=10)
FILES = {
    "config.json": b'{"model_type": "bert"}',
    "README.md": b"# tiny\n",
    "sub/other.json": b'{"x": 1}',
    "sub/deep/vocab.txt": b"a\nb\nc\n",
    "model.safetensors": safetensors_sized(bytes(range(256)) * 300),
    "sub/deep/adapter.safetensors": safetensors_sized(b"\x01\x02" * 500),
}
KEY = RepoKey("huggingface", "model", "org/tiny")

# (manifest filter lines, allow_patterns, ignore_patterns): the same selection said both ways.
FILTERS = [
    ('include: ["*.json"]', ["*.json"], None),
    ('exclude: ["sub/*"]', None, ["sub/*"]),
    ('include: ["sub/deep/*"]\n    exclude: ["*.txt"]', ["sub/deep/*"], ["*.txt"]),
]


def _sync(store: Store, hub: LoopbackHub, filters: str) -> None:
    manifest = f"version: 1\nmodels:\n  - repo: org/tiny\n    {filters}\n"
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    report = sync(
        store,
        plan_targets(parse_manifest(manifest, "m.yml").requests()),
        default_source_factory(settings),
        policy=FAST,
    )
    assert report.exit_code == 0, report.to_json()


def _answers(cache: Path, commit: str, allow: list[str] | None, ignore: list[str] | None) -> dict[str, Any]:
    """What the offline clients say of `cache`: completeness, files found, the cached listing."""
    from huggingface_hub import (
        get_cached_repo_tree,
        hf_hub_download,
        snapshot_download,
        try_to_load_from_cache,
    )

    def outcome(call: Any) -> Any:
        try:
            value = call()
        except Exception as e:  # noqa: BLE001 - the error class is the answer
            return type(e).__name__
        if isinstance(value, str):
            return Path(value).relative_to(cache).as_posix()
        return value if value is None else repr(value)

    answers: dict[str, Any] = {}
    for name, kwargs in {
        "all": {},
        "same": {"allow_patterns": allow, "ignore_patterns": ignore},
        "weights": {"allow_patterns": ["*.safetensors"]},
        "json": {"allow_patterns": ["*.json"]},
    }.items():
        answers[f"snapshot {name}"] = outcome(
            lambda kw=kwargs: snapshot_download("org/tiny", cache_dir=cache, local_files_only=True, **kw)
        )
    for path in FILES:
        answers[f"file {path}"] = outcome(
            lambda p=path: hf_hub_download("org/tiny", p, cache_dir=cache, local_files_only=True)
        )
        answers[f"try {path}"] = outcome(
            lambda p=path: try_to_load_from_cache("org/tiny", p, cache_dir=cache)
        )
    answers["tree"] = sorted(f.path for f in get_cached_repo_tree("org/tiny", cache_dir=cache))
    answers["commit"] = commit
    return answers


@pytest.mark.parametrize(("filters", "allow", "ignore"), FILTERS)
def test_filtered_import_matches_a_filtered_snapshot_download(
    hub: LoopbackHub,
    tmp_path: Path,
    isolated_home: Path,
    filters: str,
    allow: list[str] | None,
    ignore: list[str] | None,
) -> None:
    from huggingface_hub import snapshot_download

    commit = hub.add_commit(
        "org/tiny", [HubFile(p, data=d, lfs=p.endswith(".safetensors")) for p, d in FILES.items()]
    )
    theirs = tmp_path / "theirs"
    snapshot_download(
        "org/tiny",
        cache_dir=theirs,
        endpoint=hub.url,
        allow_patterns=allow,
        ignore_patterns=ignore,
        token=False,
    )
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    _sync(store, hub, filters)
    bundle = write_bundle(store, select_all(store), tmp_path / "b.tar.zst").path
    ours = tmp_path / "ours"
    import_bundle(bundle, "hf", ours)

    tree = Path("models--org--tiny") / "trees" / f"{commit}.json"
    assert (ours / tree).read_bytes() == (theirs / tree).read_bytes()
    assert sorted(json.loads((ours / tree).read_text())["files"]) == sorted(FILES)
    assert _answers(ours, commit, allow, ignore) == _answers(theirs, commit, allow, ignore)
    partial = _answers(ours, commit, allow, ignore)
    assert partial["snapshot all"] == "IncompleteSnapshotError"  # the listing is really used
    assert partial["snapshot same"].startswith("models--org--tiny/snapshots/")


def test_the_listing_travels_through_store_and_index(hub: LoopbackHub, tmp_path: Path) -> None:
    hub.add_commit("org/tiny", [HubFile(p, data=d, lfs=p.endswith(".safetensors")) for p, d in FILES.items()])
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    _sync(store, hub, 'include: ["config.json"]')
    (snap,) = store.snapshots(KEY)
    assert not snap.complete and [f.path for f in snap.files] == ["config.json"]
    assert snap.listing is not None and sorted(e.path for e in snap.listing) == sorted(FILES)
    lfs = {e.path: e.lfs_sha256 for e in snap.listing}
    assert lfs["README.md"] is None and lfs["model.safetensors"] is not None
    # A second filtered sync of the same commit widens the files and keeps the listing.
    _sync(store, hub, 'include: ["sub/*"]')
    (snap,) = store.snapshots(KEY)
    assert len(snap.files) == 4 and snap.listing is not None and len(snap.listing) == len(FILES)
    (commit,) = (
        read_index(write_bundle(store, select_all(store), tmp_path / "b.tar.zst").path).repos[0].commits
    )
    assert commit.listing == snap.listing
    # An unfiltered sync makes the record complete: the listing is then its files, kept no more.
    _sync(store, hub, "revisions: [main]")
    (snap,) = store.snapshots(KEY)
    assert snap.complete and snap.listing is None
    assert "listing" not in json.loads(
        next((store.local_root / "repos").rglob("snapshots/*.json")).read_text()
    )


def test_unfiltered_bundles_carry_no_listing(sample_store: SampleStore, tmp_path: Path) -> None:
    store = sample_store.store
    index = read_index(write_bundle(store, select_all(store), tmp_path / "all.tar.zst").path)
    assert all(c.listing is None for r in index.repos for c in r.commits)
    assert b'"listing"' not in index.to_bytes()


def test_export_filter_of_a_complete_record_writes_the_listing(
    sample_store: SampleStore, tmp_path: Path
) -> None:
    store = sample_store.store
    spec = ModelSpec(repo="org/tiny", source="huggingface", revisions=("main",), include=("*.json",))
    bundle = write_bundle(store, select_requests(store, spec.requests()), tmp_path / "f.tar.zst").path
    (commit,) = read_index(bundle).repos[0].commits
    assert not commit.complete and commit.listing is not None
    assert sorted(e.path for e in commit.listing) == sorted(TINY_MAIN)
    cache = tmp_path / "hub"
    import_bundle(bundle, "hf", cache)
    tree = json.loads((cache / "models--org--tiny" / "trees" / f"{commit.commit}.json").read_text())
    assert sorted(tree["files"]) == sorted(TINY_MAIN)
    assert tree["files"]["model.safetensors"]["lfs_size"] == len(TINY_MAIN["model.safetensors"])
    assert "lfs_sha256" not in tree["files"]["config.json"]


def test_a_partial_record_without_listing_writes_no_tree(tmp_path: Path, isolated_home: Path) -> None:
    """What older stores and bundles hold, and what a ModelScope source gives: no listing, no trees/."""
    for source in ("huggingface", "modelscope"):
        store = Store.at(tmp_path / f"store-{source}", clock=SYSTEM)
        put_repo(store, "org/tiny", {"main": {"config.json": b"{}"}}, complete=False, source=source)
        bundle = write_bundle(store, select_all(store), tmp_path / f"{source}.tar.zst").path
        cache = tmp_path / f"hub-{source}"
        import_bundle(bundle, "hf", cache)
        assert (cache / "models--org--tiny" / "snapshots").is_dir()
        assert not (cache / "models--org--tiny" / "trees").exists()


def test_remote_listing_needs_every_git_id() -> None:
    sha = "a" * 64
    hf = RemoteSnapshot(
        "c" * 40, (RemoteFile("a", 1, "b" * 40, False, None), RemoteFile("w", 2, "d" * 40, True, sha))
    )
    listing = remote_listing(hf)
    assert listing is not None and [(e.path, e.lfs_sha256) for e in listing] == [("a", None), ("w", sha)]
    # ModelScope lists sha256 but no git ids; a hub may also answer a malformed id.
    for odd in (RemoteFile("a", 1, None, False, sha), RemoteFile("a", 1, "xyz", False, None)):
        assert remote_listing(RemoteSnapshot("c" * 40, (odd,))) is None
    assert remote_listing(RemoteSnapshot("c" * 40, (RemoteFile("w", 2, "d" * 40, True, None),))) is None


def _entry(commit: dict[str, Any], path: str) -> dict[str, Any]:
    return next(e for e in commit["listing"] if e["path"] == path)  # type: ignore[no-any-return]


def _tampered(index: BundleIndex, change: Any) -> dict[str, Any]:
    data = index.to_json()
    change(data["repos"][0]["commits"][0])
    return data


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["listing"].remove(_entry(c, "config.json")),  # a file of the commit not listed
        lambda c: c["listing"].append(dict(c["listing"][0])),  # a path listed twice
        lambda c: c["listing"][0].update(oid="0" * 39),  # an invalid git id
        lambda c: c["listing"][0].update(size=-1),
        lambda c: c["listing"][0].update(path="../escape"),
        lambda c: c["listing"][-1].update(lfs_sha256="nothex"),
        lambda c: c.update(listing="everything"),
        lambda c: c.update(complete=True),  # a complete commit with a listing beside it
        lambda c: _entry(c, "config.json").update(size=1),  # disagrees with its file
        lambda c: _entry(c, "config.json").update(lfs_sha256="a" * 64),
    ],
)
def test_a_hostile_listing_is_refused(sample_store: SampleStore, tmp_path: Path, change: Any) -> None:
    store = sample_store.store
    spec = ModelSpec(repo="org/tiny", source="huggingface", revisions=("main",), include=("*.json",))
    index = read_index(
        write_bundle(store, select_requests(store, spec.requests()), tmp_path / "f.tar.zst").path
    )
    assert index.repos[0].commits[0].listing is not None
    BundleIndex.from_json(index.to_json())  # untouched, it reads back
    with pytest.raises(IntegrityError):
        BundleIndex.from_json(_tampered(index, change))


def test_a_filtered_modelscope_sync_keeps_no_listing_and_writes_no_tree(
    hub: LoopbackHub, tmp_path: Path, isolated_home: Path
) -> None:
    """ModelScope lists no git blob ids, which trees/<commit>.json needs for the files not fetched: its
    filtered commits get no listing, and their HF-cache import no trees/ (offline clients take the folder
    as complete, as before)."""
    commit = hub.add_commit("owner/model", FILES, branch="master")
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    manifest = (
        "version: 1\nmodels:\n  - repo: owner/model\n    source: modelscope\n    revisions: [master]\n"
        '    include: ["*.json"]\n'
    )
    settings = Settings.from_env(store.local_root, {"MODELSCOPE_ENDPOINT": hub.url})
    report = sync(
        store,
        plan_targets(parse_manifest(manifest, "m.yml").requests()),
        default_source_factory(settings),
        policy=FAST,
    )
    assert report.exit_code == 0, report.to_json()
    (snap,) = store.snapshots(RepoKey("modelscope", "model", "owner/model"))
    assert not snap.complete and snap.listing is None
    cache = tmp_path / "hub-cache"
    import_bundle(write_bundle(store, select_all(store), tmp_path / "ms.tar.zst").path, "hf", cache)
    repo = cache / "models--owner--model"
    assert sorted(p.name for p in (repo / "snapshots" / commit).iterdir()) == ["config.json", "sub"]
    assert not (repo / "trees").exists()
