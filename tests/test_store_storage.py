"""The store on the storage interface: `open_storage` picks a storage from what the user named, an s3://
store name is kept as text from the command line to the storage, records and refs are written with
conditional writes (a writer that finds one changed re-reads it and applies its change again), gc removes
what killed runs abandoned, and a store behaves alike over every storage (`tests.storages`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from starlette.applications import Starlette

from mirror.bundle import read_index
from mirror.cli import main
from mirror.cli.options import STORE
from mirror.clock import SYSTEM
from mirror.errors import UsageError
from mirror.export import export
from mirror.gc import ABANDONED, collect_garbage, plan_keep
from mirror.repo import RepoKey
from mirror.serve import hf
from mirror.serve.view import RECORD_TTL, StoreView
from mirror.settings import Settings
from mirror.storage import open_storage
from mirror.storage.base import ABSENT, ConflictError
from mirror.storage.local import LocalStorage
from mirror.storage.s3 import S3Storage
from mirror.store import ATTEMPTS, Store
from mirror.verify import verify_store
from tests.asgi import call
from tests.clocks import FakeClock, ManualClock
from tests.conftest import TINY_MAIN, TINY_V1, put_repo
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.s3server import SECRET_KEY, S3Bucket
from tests.storages import OpaqueStorage

KEY = RepoKey("huggingface", "model", "org/tiny")
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


# --- open_storage and store names ------------------------------------------------------------------


def test_open_storage_of_a_folder_is_a_local_storage_there(tmp_path: Path) -> None:
    for name in (tmp_path / "store", str(tmp_path / "store"), "relative/store"):
        storage = open_storage(name, clock=SYSTEM)
        assert isinstance(storage, LocalStorage)
        assert storage.local_root == Path(name)  # a relative folder stays relative to the current one


def test_open_storage_of_an_s3_url_is_the_s3_storage(s3: S3Bucket) -> None:
    url = s3.url("team/store")
    storage = open_storage(url, clock=SYSTEM)
    assert isinstance(storage, S3Storage)
    assert str(storage) == url and storage.local_root is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("s3://", "is not a bucket name"),
        ("s3://Not_A_Bucket/store", "is not a bucket name"),
        ("s3://bucket/../store", "no empty, '.' or '..' part"),
        ("gs://bucket/store", "a store is a folder or an s3://BUCKET/PREFIX URL"),
    ],
)
def test_open_storage_refuses_a_bad_url(name: str, says: str) -> None:
    with pytest.raises(UsageError, match=says.replace(".", r"\.").replace("?", r"\?")):
        open_storage(name, clock=SYSTEM)


def test_an_s3_store_name_is_kept_as_text_from_the_command_line_and_the_environment(tmp_path: Path) -> None:
    url = "s3://bucket/team/store"
    assert STORE.convert(url, None, None) == url  # a Path would make it "s3:/bucket/team/store"
    assert Settings.from_env(url, {}).store == url
    assert Settings.from_env(None, {"MIRROR_STORE": url}).store == url
    assert Settings.from_env("rel/store", {}).store == Path("rel/store")  # a folder, not resolved
    assert STORE.convert(str(tmp_path), None, None) == tmp_path


@pytest.mark.parametrize("layout", ["hf", "dir", "store"])
def test_an_s3_target_is_a_usage_error_naming_it_but_for_a_store_to_import_into_or_inventory(
    layout: str, tmp_path: Path, isolated_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "b.tar.zst"
    bundle.write_bytes(b"")
    refused = [["verify", "--layout", layout, "--target", "s3://bucket/t"]]
    if layout != "store":
        refused.append(["import", str(bundle), "--layout", layout, "--target", "s3://bucket/t"])
        refused.append(
            ["inventory", "--layout", layout, "--target", "s3://bucket/t", "-o", str(tmp_path / "h")]
        )
    for args in refused:
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 2, args
        assert "s3://bucket/t" in capsys.readouterr().err
    assert not (Path.cwd() / "s3:").exists()  # the URL was never taken for a folder


def test_a_bundle_imported_into_a_store_in_a_bucket_is_the_store_it_came_from(
    sample_store: object, s3: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source: Store = sample_store.store  # type: ignore[attr-defined]
    bundle = tmp_path / "all.tar.zst"
    export(source, None, bundle)
    url = s3.url("far/store")
    code, out = run_cli(["import", str(bundle), "--layout", "store", "--target", url, "--json"], capsys)
    assert code == 0 and f'"target": "{url}"' in out and f"{url}/repos/huggingface/model/org--tiny/" in out
    assert run_cli(["verify", "--store", url], capsys)[0] == 0
    again = tmp_path / "again.tar.zst"
    assert run_cli(["export", "--store", url, "-o", str(again)], capsys)[0] == 0
    assert again.read_bytes() == bundle.read_bytes()
    code, out = run_cli(["import", str(bundle), "--layout", "store", "--target", url], capsys)
    assert code == 0 and "present" in out and "imported" not in out  # nothing written twice
    assert not s3.keys("far/store/tmp/")  # no temporary upload left behind
    far, near = tmp_path / "far.json", tmp_path / "near.json"
    assert run_cli(["inventory", "--layout", "store", "--target", url, "-o", str(far)], capsys)[0] == 0
    local = ["inventory", "--layout", "store", "--target", str(source.local_root), "-o", str(near)]
    assert run_cli(local, capsys)[0] == 0
    assert far.read_bytes() == near.read_bytes()  # the same blobs, repos, revisions and commits


def test_a_delta_against_a_buckets_inventory_imports_into_it_without_carrying_what_it_holds(
    sample_store: object, s3: S3Bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The far side's inventory of a store in a bucket, carried back, makes the next export a delta that
    leaves out the blobs the bucket holds; importing it completes every repo from the bucket's own blobs."""
    source: Store = sample_store.store  # type: ignore[attr-defined]
    first = tmp_path / "first.tar.zst"
    export(source, None, first)
    url = s3.url("far")
    assert run_cli(["import", str(first), "--layout", "store", "--target", url], capsys)[0] == 0
    have = tmp_path / "have.json"
    assert run_cli(["inventory", "--layout", "store", "--target", url, "-o", str(have)], capsys)[0] == 0
    weights = safetensors_sized(os.urandom(300_000))
    later = put_repo(source, "org/tiny", {"main": {**TINY_MAIN, "model-2.safetensors": weights}})
    delta = tmp_path / "delta.tar.zst"
    have_args = ["export", "--store", str(source.local_root), "--have", str(have), "-o", str(delta)]
    assert run_cli(have_args, capsys)[0] == 0
    index = read_index(delta)
    left = {f.sha256 for f in index.files() if index.placement(f.sha256).in_target}
    assert left and hashlib.sha256(weights).hexdigest() not in left  # the bucket's blobs stay behind
    code, out = run_cli(["import", str(delta), "--layout", "store", "--target", url], capsys)
    assert code == 0, out
    far = Store(open_storage(url, clock=SYSTEM), clock=SYSTEM)
    assert far.read_refs(KEY)["main"].commit == later.commits["main"]
    assert run_cli(["verify", "--store", url], capsys)[0] == 0
    again, near = tmp_path / "again.tar.zst", tmp_path / "near.tar.zst"
    assert run_cli(["export", "--store", url, "-o", str(again)], capsys)[0] == 0
    assert run_cli(["export", "--store", str(source.local_root), "-o", str(near)], capsys)[0] == 0
    assert again.read_bytes() == near.read_bytes()  # the bucket holds what the source holds


# --- conditional writes of records and refs ---------------------------------------------------------


def test_a_write_expecting_a_stale_tag_or_absence_is_a_conflict(storage_store: Store) -> None:
    storage = storage_store.storage
    storage.write("repos/x/refs.json", b"{}", expect=ABSENT)
    first = storage.read("repos/x/refs.json", 1024)
    assert first is not None
    storage.write("repos/x/refs.json", b'{"a": 1}', expect=first.tag)  # the second writer's
    with pytest.raises(ConflictError):
        storage.write("repos/x/refs.json", b'{"b": 2}', expect=first.tag)  # the first's, now stale
    with pytest.raises(ConflictError):
        storage.write("repos/x/refs.json", b"{}", expect=ABSENT)
    again = storage.read("repos/x/refs.json", 1024)
    assert again is not None and again.data == b'{"a": 1}'


class _Interleaved:
    """A storage whose first write of `key` lets `other` run first (a second writer between this writer's
    read and its write); it counts the writes of `key` attempted."""

    def __init__(self, storage: object, key: str, other: object) -> None:
        self._storage, self._key, self._other = storage, key, other
        self.attempts = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._storage, name)

    def write(self, key: str, data: bytes, *, expect: object = None) -> None:
        if key == self._key:
            self.attempts += 1
            if self.attempts == 1:
                self._other()  # type: ignore[operator]
        self._storage.write(key, data, expect=expect)  # type: ignore[attr-defined]


def test_two_writers_of_refs_json_keep_both_their_names(storage_store: Store) -> None:
    """The documented choice: a writer whose tag went stale re-reads refs.json and moves its names again."""
    other = Store(storage_store.storage, clock=SYSTEM)
    storage_store.set_refs(KEY, {"main": COMMIT_A}, "2026-11-20T10:00:00Z")
    racing = _Interleaved(
        storage_store.storage,
        storage_store.refs_key(KEY),
        lambda: other.set_refs(KEY, {"v1.0": COMMIT_B}, "2026-11-21T10:00:00Z"),
    )
    first = Store(racing, clock=SYSTEM)  # type: ignore[arg-type]
    first.set_refs(KEY, {"main": COMMIT_B}, "2026-11-22T10:00:00Z")
    assert racing.attempts == 2  # its first write found refs.json changed, and did not overwrite it
    refs = storage_store.read_refs(KEY)
    assert {name: (r.commit, r.synced_at) for name, r in refs.items()} == {
        "main": (COMMIT_B, "2026-11-22T10:00:00Z"),
        "v1.0": (COMMIT_B, "2026-11-21T10:00:00Z"),
    }


def test_a_writer_dropping_names_keeps_what_another_added_meanwhile(storage_store: Store) -> None:
    other = Store(storage_store.storage, clock=SYSTEM)
    storage_store.set_refs(KEY, {"main": COMMIT_A, "old": COMMIT_A}, "2026-11-20T10:00:00Z")
    racing = _Interleaved(
        storage_store.storage,
        storage_store.refs_key(KEY),
        lambda: other.set_refs(KEY, {"new": COMMIT_B}, "2026-11-21T10:00:00Z"),
    )
    Store(racing, clock=SYSTEM).drop_refs(KEY, ["old"])  # type: ignore[arg-type]
    assert racing.attempts == 2
    assert sorted(storage_store.read_refs(KEY)) == ["main", "new"]


class _AlwaysChanged(LocalStorage):
    """A storage where another writer always got there first."""

    writes = 0

    def write(self, key: str, data: bytes, *, expect: object = None) -> None:
        type(self).writes += 1
        raise ConflictError(f"{key} changed")


def test_a_writer_that_always_finds_the_record_changed_gives_up_clearly(tmp_path: Path) -> None:
    store = Store(_AlwaysChanged(tmp_path / "store", clock=SYSTEM), clock=SYSTEM)
    with pytest.raises(ConflictError) as info:
        store.set_refs(KEY, {"main": COMMIT_A}, "2026-11-20T10:00:00Z")
    assert _AlwaysChanged.writes == ATTEMPTS
    assert str(tmp_path / "store" / store.refs_key(KEY)) in str(info.value)
    assert "another writer" in str(info.value) and "run again" in str(info.value)


# --- gc: what killed runs abandoned -------------------------------------------------------------------


def test_gc_removes_staging_files_untouched_for_a_day_and_keeps_younger_ones_and_kept_volumes(
    tmp_path: Path,
) -> None:
    fake = FakeClock()
    store = Store.at(tmp_path / "store", clock=fake.clock)
    put_repo(store, "org/tiny", {"main": TINY_V1})
    old, young = store.temp_path("old.part"), store.temp_path("young.part")
    kept = store.temp_path("kept") / "set-id" / "content"  # a volume set's, waiting for its next disc
    kept.parent.mkdir(parents=True)
    for path, age in ((old, ABANDONED + 60), (young, ABANDONED - 60), (kept, 30 * ABANDONED)):
        path.write_bytes(b"partial")
        os.utime(path, (fake.now - age, fake.now - age))
    for folder in (kept.parent, kept.parent.parent):
        os.utime(folder, (fake.now - 30 * ABANDONED, fake.now - 30 * ABANDONED))
    dry = collect_garbage(store, plan_keep(store, None), dry_run=True)
    assert dry.abandoned == [] and old.exists()  # a dry run removes nothing
    done = collect_garbage(store, plan_keep(store, None), dry_run=False)
    assert done.abandoned == ["tmp/old.part"]
    assert not old.exists() and young.exists() and kept.exists()
    assert verify_store(store).ok


# --- a store over every storage ------------------------------------------------------------------------


def test_a_store_reads_and_writes_alike_over_every_storage(storage_store: Store) -> None:
    store = storage_store
    tiny = put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1})
    assert store.repos() == [tiny.key]
    assert {n: r.commit for n, r in store.read_refs(tiny.key).items()} == tiny.commits
    assert sorted(s.commit for s in store.snapshots(tiny.key)) == sorted(set(tiny.commits.values()))
    weights = TINY_MAIN["model.safetensors"]
    sha = hashlib.sha256(weights).hexdigest()
    assert store.has_blob(sha, len(weights)) and not store.has_blob(sha, len(weights) + 1)
    assert store.blob_problem(sha, 1) == f"{len(weights)} bytes, not 1"
    assert store.blob_problem("0" * 64) == "missing"
    with store.open_blob(sha, 100, 300) as f:
        assert f.read() == weights[100:300]
    assert store.blob_sha256(sha) == sha
    names = [name for name, _ in store.iter_blobs()]
    assert names == sorted(names) and sha in names
    store.doubt_blob(sha)
    assert store.in_doubt(sha) and store.blob_damage(sha, len(weights)) is None and not store.in_doubt(sha)
    assert verify_store(store).ok
    store.drop_refs(tiny.key, ["main"])
    gone = collect_garbage(store, plan_keep(store, None), dry_run=False)
    assert gone.refs == [] and len(gone.snapshots) == 1 and gone.blobs
    assert store.read_snapshot(tiny.key, tiny.commits["v1.0"]) is not None
    assert verify_store(store).ok


def test_an_export_is_byte_identical_over_every_storage(storage_store: Store, tmp_path: Path) -> None:
    reference = Store.at(tmp_path / "reference", clock=SYSTEM)
    for store in (reference, storage_store):
        put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1})
        put_repo(
            store,
            "gpt2",
            {"main": {"config.json": b"{}", "model.safetensors": safetensors_sized(b"w" * 5000)}},
        )
    export(reference, None, tmp_path / "reference.tar.zst")
    export(storage_store, None, tmp_path / "other.tar.zst")
    assert (tmp_path / "reference.tar.zst").read_bytes() == (tmp_path / "other.tar.zst").read_bytes()


def test_serve_hands_a_local_blob_over_by_path_and_streams_any_other(storage_store: Store) -> None:
    store = storage_store
    put_repo(store, "org/tiny", {"main": TINY_MAIN})
    app = Starlette(routes=hf.routes(StoreView(store)))
    url = "/org/tiny/resolve/main/model.safetensors"
    whole = call(app, "GET", url, pathsend=True)
    ranged = call(app, "GET", url, {"Range": "bytes=10-"}, pathsend=True)
    weights = TINY_MAIN["model.safetensors"]
    local = store.local_blob(hashlib.sha256(weights).hexdigest())
    if local is not None:
        assert (whole.status, whole.pathsend, whole.body) == (200, str(local), b"")
    else:
        assert (whole.status, whole.pathsend, whole.body) == (200, None, weights)
    assert (ranged.status, ranged.pathsend, ranged.body) == (206, None, weights[10:])


# --- the commands over a store in a bucket -----------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    out, err = capsys.readouterr()
    assert SECRET_KEY not in out + err
    return int(done.value.code or 0), out + err


def test_sync_status_verify_export_gc_and_serve_run_over_a_store_in_a_bucket(
    hub: LoopbackHub,
    s3: S3Bucket,
    tmp_path: Path,
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = safetensors_sized(bytes(range(256)) * 40)
    hub.add_commit("org/a", {"config.json": b'{"model_type": "bert"}', "model.safetensors": weights})
    manifest = tmp_path / "m.yml"
    manifest.write_text("version: 1\nmodels:\n  - repo: org/a\n")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    url = s3.url("team/store")
    monkeypatch.setenv("MIRROR_STORE", url)
    assert run_cli(["sync", str(manifest)], capsys)[0] == 0
    assert "team/store/repos/huggingface/model/org--a/refs.json" in s3.keys("team/store/repos/")
    sha = hashlib.sha256(weights).hexdigest()
    assert s3.read(f"team/store/blobs/sha256/{sha[:2]}/{sha}") == weights
    fetched = len(hub.downloads())
    assert run_cli(["sync", str(manifest)], capsys)[0] == 0
    assert len(hub.downloads()) == fetched  # what the bucket holds is judged held: nothing fetched again
    code, out = run_cli(["status", "--json"], capsys)
    assert code == 0 and "org/a" in out
    assert run_cli(["verify"], capsys)[0] == 0
    local = tmp_path / "local-store"
    assert run_cli(["sync", str(manifest), "--store", str(local)], capsys)[0] == 0
    from_bucket, from_folder = tmp_path / "bucket.tar.zst", tmp_path / "folder.tar.zst"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1764936000")  # the two syncs' times may differ
    assert run_cli(["export", "-o", str(from_bucket)], capsys)[0] == 0
    assert run_cli(["export", "--store", str(local), "-o", str(from_folder)], capsys)[0] == 0
    assert from_bucket.read_bytes() == from_folder.read_bytes()
    code, out = run_cli(["gc", "--dry-run", "--json"], capsys)
    assert code == 0 and '"blobs": []' in out
    from mirror.serve.app import create_app

    app = create_app(url, clock=SYSTEM)
    answer = call(app, "GET", "/org/a/resolve/main/model.safetensors", {"Range": "bytes=100-"}, pathsend=True)
    assert (answer.status, answer.pathsend, answer.body) == (206, None, weights[100:])


def test_serve_over_a_bucket_sees_a_blob_gone_within_the_ttl(tmp_path: Path) -> None:
    """Over a bucket a look is a request: the server keeps what a look at a blob (and a read of a commit
    record) found for RECORD_TTL seconds, so a change made through another host shows within 10 s; refs
    are read at each request."""
    fake = FakeClock()
    store = Store(OpaqueStorage(tmp_path / "store", clock=fake.clock), clock=fake.clock)
    put_repo(store, "org/tiny", {"main": TINY_V1})
    app = Starlette(routes=hf.routes(StoreView(store)))

    def listed(revision: str = "main") -> list[str]:
        answer = call(app, "GET", f"/api/models/org/tiny/revision/{revision}")
        return sorted(s["rfilename"] for s in answer.json()["siblings"]) if answer.status == 200 else []

    assert "tokenizer.json" in listed()
    put_repo(store, "org/tiny", {"v2": TINY_MAIN})
    assert "extra/notes.txt" in listed("v2")  # a new revision shows at once
    store.storage.delete(Store.blob_key(hashlib.sha256(TINY_V1["tokenizer.json"]).hexdigest()))
    assert "tokenizer.json" in listed()  # as looked at less than RECORD_TTL ago
    fake.now += RECORD_TTL
    assert "tokenizer.json" not in listed() and "config.json" in listed()


def held_state(store: Store) -> dict[str, object]:
    """Every repo's refs and commit records, and the blobs, of a store."""
    state: dict[str, object] = {"blobs": sorted(name for name, _ in store.iter_blobs())}
    for key in store.repos():
        state[f"{key} refs"] = store.read_refs(key)
        state[f"{key} records"] = sorted((s.commit, s.files) for s in store.snapshots(key))
    return state


@pytest.mark.e2e
def test_an_import_into_a_bucket_killed_at_every_step_leaves_verified_objects_and_a_rerun_completes(
    sample_store: object, s3: S3Bucket, tmp_path: Path
) -> None:
    """SIGKILLed (in a child) after each write of an import into a store in a bucket: every blob under its
    final key holds its content, every record and ref names what is there (verify passes), and the rerun,
    once the killed run's lease expired, gives the store an uninterrupted import gives."""
    from mirror import s3 as mirror_s3
    from mirror.importing import import_bundle
    from tests.test_import_safety import Steps, import_killed_at

    bundle = tmp_path / "all.tar.zst"
    export(sample_store.store, None, bundle)  # type: ignore[attr-defined]
    manual = ManualClock()
    steps = Steps()
    import_bundle(bundle, "store", s3.url("reference"), clock=manual.clock, checkpoint=steps)
    expected = held_state(Store(open_storage(s3.url("reference"), clock=manual.clock), clock=manual.clock))
    assert steps.count > 5
    for step in range(1, steps.count + 1):
        url = s3.url(f"t{step}")

        def killed(steps: Steps, url: str = url) -> None:
            mirror_s3.client.cache_clear()  # the child's own connections, not the parent's
            import_bundle(bundle, "store", url, clock=manual.clock, checkpoint=steps)

        assert import_killed_at(step, killed), step
        store = Store(open_storage(url, clock=manual.clock), clock=manual.clock)
        for name, _ in store.iter_blobs():
            assert store.blob_sha256(name) == name, f"step {step}: an unverified blob under a final key"
        if store.repos():
            assert verify_store(store).ok, step
        manual.advance(61)  # the killed run's lease expires
        import_bundle(bundle, "store", url, clock=manual.clock)  # the rerun
        assert held_state(store) == expected, step
