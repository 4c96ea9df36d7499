"""The import never acts outside its target and never half-publishes (issue 11 section 1): links and files
planted where the import writes are refused before anything is written; a bundle that cannot be published
is refused whole (and by `mirror verify`); one import at a time per target; a ref huggingface_hub moved
online is never moved back by an older bundle."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import mirror.bundle.parse as parse_module
import mirror.clock as clock_module
from mirror.bundle import read_index, select_all, write_bundle
from mirror.cli import main
from mirror.cli.output import repo_report_line
from mirror.clock import SYSTEM, Clock
from mirror.errors import LockedError
from mirror.importing import import_bundle
from mirror.importing.staging import Staging
from mirror.manifest import parse_manifest
from mirror.settings import Settings
from mirror.store import Store
from mirror.sync import default_source_factory, plan_targets, sync
from tests.conftest import put_repo
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.roundtrip import fresh_env, mirror_command
from tests.test_hub import run_client
from tests.test_sync import FAST

OLD = {
    "config.json": b'{"v": "old"}\n',
    "model.safetensors": safetensors_sized(b"old weights" * 300),
    "sub/x.txt": b"x",
}
NEW = {
    "config.json": b'{"v": "new"}\n',
    "model.safetensors": safetensors_sized(b"new weights" * 300),
    "sub/x.txt": b"y",
}


def tree_state(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under root (root included) by kind, mode, mtime and content: byte-identical means equal."""
    out: dict[str, tuple[Any, ...]] = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(p)
        rel = p.relative_to(root).as_posix()
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("file", st.st_mode, st.st_mtime_ns, p.read_bytes())
        else:
            out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
    return out


class Bundles(NamedTuple):
    old: Path  # org/tiny main -> OLD (created 2026-11-01)
    new: Path  # org/tiny main -> NEW (created 2026-11-20)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    work = tmp_path_factory.mktemp("target")
    paths = []
    for name, files, when in (("old", OLD, "2026-11-01T00:00:00Z"), ("new", NEW, "2026-11-20T00:00:00Z")):
        store = Store.at(work / f"{name}-store", clock=SYSTEM)
        put_repo(store, "org/tiny", {"main": files}, synced_at=when)
        paths.append(write_bundle(store, select_all(store), work / f"{name}.tar.zst").path)
    return Bundles(*paths)


def outside_folder(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True, exist_ok=True)
    (outside / "keep.txt").write_bytes(b"precious")
    (outside / "deep" / "main").write_bytes(b"0" * 40)
    os.chmod(outside / "keep.txt", 0o640)
    return outside


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        main([*args, "-q"])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


LAYOUTS = [("hf", []), ("hf", ["--no-symlinks"]), ("modelscope", []), ("dir", [])]
HF_REPO = "models--org--tiny"
MS_REPO = "models/org--tiny"
# Where each layout writes for itself, relative to the target (`{c}`: the commit of main in the new bundle,
# `{e}`: the blob name of one of its files).
PLACES = {
    "hf": [
        HF_REPO,
        f"{HF_REPO}/.mirror",
        f"{HF_REPO}/.mirror/tmp",
        f"{HF_REPO}/.mirror/receipts",
        f"{HF_REPO}/.mirror/refs.json",
        f"{HF_REPO}/.mirror/implied-main.json",
        f"{HF_REPO}/.mirror/receipts/planted.json",
        f"{HF_REPO}/blobs/{{e}}",
        f"{HF_REPO}/trees/{{c}}.json",
        f"{HF_REPO}/blobs",
        f"{HF_REPO}/snapshots",
        f"{HF_REPO}/snapshots/{{c}}",
        f"{HF_REPO}/snapshots/{{c}}/sub",
        f"{HF_REPO}/refs",
        f"{HF_REPO}/refs/main",
        f"{HF_REPO}/trees",
    ],
    "modelscope": [
        "models",
        MS_REPO,
        f"{MS_REPO}/.mirror",
        f"{MS_REPO}/.mirror/tmp",
        f"{MS_REPO}/.mirror/receipts",
        f"{MS_REPO}/.mirror/receipts/main.json",
        f"{MS_REPO}/snapshots",
        f"{MS_REPO}/snapshots/main",
    ],
    "dir": [
        ".mirror",
        ".mirror/tmp",
        ".mirror/receipts",
        ".mirror/receipts/org%2Ftiny.json",
        "org",
        "org/tiny",
    ],
}


def populated(bundle: Path, layout: str, flags: list[str], target: Path) -> None:
    """The target as an import of bundle left it."""
    assert main_code(["import", str(bundle), "--layout", layout, "--target", str(target), *flags, "-q"]) == 0


def main_code(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def plant(place: Path, what: str, outside: Path) -> None:
    if place.is_symlink() or place.is_file():
        place.unlink()
    elif place.exists():
        shutil.rmtree(place)
    place.parent.mkdir(parents=True, exist_ok=True)
    if what == "link":
        place.symlink_to(outside, target_is_directory=True)
    else:
        place.write_bytes(b"in the way")


@pytest.mark.parametrize(("layout", "flags"), LAYOUTS, ids=["hf", "hf-no-symlinks", "modelscope", "dir"])
@pytest.mark.parametrize("what", ["link", "file"])
def test_a_link_or_file_planted_where_the_import_writes_is_refused_before_anything_is_written(
    bundles: Bundles,
    layout: str,
    flags: list[str],
    what: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = read_index(bundles.new).repos[0]
    commit = repo.revisions[0][1]
    etag = repo.commits[0].files[0].etag
    outside = outside_folder(tmp_path)
    before_outside = tree_state(outside)
    places = PLACES["hf" if layout == "hf" else layout]
    for i, rel in enumerate(places):
        rel = rel.format(c=commit, e=etag)
        if what == "file" and rel.endswith(("/main", ".json", etag)):
            continue  # a file is what belongs there
        for fresh in (True, False):
            target = tmp_path / f"t-{i}-{fresh}"
            if not fresh:
                populated(bundles.old, layout, flags, target)
            plant(target / rel, what, outside)
            before = tree_state(target)
            code, err = run(
                ["import", str(bundles.new), "--layout", layout, "--target", str(target), *flags], capsys
            )
            assert code in (1, 4), (rel, fresh, code, err)
            if what == "link":
                assert code == 1, (rel, err)
            # (A dir target whose .mirror/ is replaced has lost its receipts: org/tiny is named instead.)
            named = any(part in err for part in rel.split("/"))
            assert named or (layout == "dir" and "org/tiny exists" in err), (rel, err)
            assert "nothing was" in err or "move it away" in err, (rel, err)
            assert tree_state(target) == before, rel
            assert tree_state(outside) == before_outside, rel


@pytest.mark.parametrize(("layout", "flags"), LAYOUTS, ids=["hf", "hf-no-symlinks", "modelscope", "dir"])
def test_the_sweep_of_a_killed_imports_leftovers_never_follows_a_link(
    bundles: Bundles, layout: str, flags: list[str], tmp_path: Path
) -> None:
    outside = outside_folder(tmp_path)
    before_outside = tree_state(outside)
    target = tmp_path / "t"
    populated(bundles.old, layout, flags, target)
    tmp = {"hf": f"{HF_REPO}/.mirror/tmp", "modelscope": f"{MS_REPO}/.mirror/tmp", "dir": ".mirror/tmp"}[
        layout
    ]
    staging = target / tmp
    staging.mkdir(parents=True, exist_ok=True)
    (staging / ("a" * 32)).symlink_to(outside, target_is_directory=True)  # a leftover replaced by a link
    left = staging / ("b" * 32)
    left.mkdir()
    (left / "inner").symlink_to(outside, target_is_directory=True)
    (left / "file").symlink_to(outside / "keep.txt")
    populated(bundles.new, layout, flags, target)
    assert tree_state(outside) == before_outside
    assert not (staging / ("a" * 32)).is_symlink() and not left.exists()


# -- a bundle that cannot be published ---------------------------------------------------------------------


@contextmanager
def unchecked_names() -> Iterator[None]:
    """Write bundles as a tool without the publishability checks would."""
    saved = parse_module._check_publishable, parse_module.nested_names
    parse_module._check_publishable = lambda name, what: None  # type: ignore[assignment]
    parse_module.nested_names = lambda names: []  # type: ignore[assignment]
    try:
        yield
    finally:
        parse_module._check_publishable, parse_module.nested_names = saved


def bundle_of(tmp_path: Path, name: str, revisions: dict[str, dict[str, bytes]], when: str) -> Path:
    store = Store.at(tmp_path / f"{name}-store", clock=SYSTEM)
    put_repo(store, "org/tiny", revisions, synced_at=when)
    with unchecked_names():
        return write_bundle(store, select_all(store), tmp_path / f"{name}.tar.zst").path


UNPUBLISHABLE = {
    "long-name": {"main": {"n" * 256 + ".bin": b"x"}},
    "long-name-multibyte": {"main": {"é" * 128 + "/a.bin": b"x"}},
    "long-path": {"main": {"/".join(["d" * 250] * 15) + "/a.bin": b"x"}},
    "long-revision": {"r" * 256: {"a.bin": b"x"}},
    "nested-revisions": {"v": {"a.bin": b"x"}, "v/x": {"a.bin": b"y"}},
    "nested-files": {"main": {"sub": b"file", "sub/x": b"in a folder"}},
}


@pytest.mark.parametrize("case", sorted(UNPUBLISHABLE))
def test_a_bundle_that_cannot_be_published_is_refused_by_verify_and_by_import_in_every_layout(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_of(tmp_path, case, UNPUBLISHABLE[case], "2026-11-20T00:00:00Z")
    code, err = run(["verify", str(bundle)], capsys)
    assert code == 4 and ("too long" in err or "lies inside" in err), err
    for layout, flags in LAYOUTS:
        target = tmp_path / f"t-{layout}-{len(flags)}"
        target.mkdir()
        (target / "other").write_bytes(b"kept")
        before = tree_state(target)
        code, err = run(["import", str(bundle), "--layout", layout, "--target", str(target), *flags], capsys)
        assert code == 4 and ("too long" in err or "lies inside" in err), (layout, err)
        assert tree_state(target) == before


def test_names_only_one_layout_cannot_hold_are_refused_by_that_layout_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # refs/a/a/... is fine in the hf cache; as one folder name DIR/org/tiny@a%2Fa%2F... it is too long.
    bundle = bundle_of(
        tmp_path, "slashes", {"main": {"a.bin": b"x"}, "/".join("a" * 70): {"a.bin": b"y"}}, "x"
    )
    assert run(["verify", str(bundle)], capsys)[0] == 0
    target = tmp_path / "dir"
    code, err = run(["import", str(bundle), "--layout", "dir", "--target", str(target)], capsys)
    assert code == 4 and "too long" in err and "nothing was imported" in err
    assert not target.exists()
    assert run(["import", str(bundle), "--target", str(tmp_path / "hf")], capsys)[0] == 0
    # A path that fits the bundle's room but not below a deep target.
    deep = tmp_path.joinpath(*["d" * 250] * 15)
    deep.mkdir(parents=True)
    long = bundle_of(tmp_path, "long", {"main": {"/".join(["p" * 200] * 3): b"x"}}, "2026-11-20T00:00:00Z")
    assert run(["verify", str(long)], capsys)[0] == 0
    for layout in ("hf", "dir", "modelscope"):
        code, err = run(["import", str(long), "--layout", layout, "--target", str(deep)], capsys)
        assert code == 4 and "too long" in err, (layout, err)
        assert list(deep.iterdir()) == []


def test_a_revision_or_path_that_is_a_file_in_the_target_and_a_folder_in_the_bundle_is_refused_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = bundle_of(tmp_path, "v", {"v": {"a.bin": b"x"}}, "2026-11-01T00:00:00Z")
    second = bundle_of(
        tmp_path, "vx", {"v/x": {"a.bin": b"y"}, "main": {"a.bin": b"z"}}, "2026-11-20T00:00:00Z"
    )
    target = tmp_path / "hf"
    assert run(["import", str(first), "--target", str(target)], capsys)[0] == 0
    before = tree_state(target)
    code, err = run(["import", str(second), "--target", str(target)], capsys)
    assert code == 4 and "refs/v" in err and "cannot be published" in err, err
    assert tree_state(target) == before
    # ... and the reverse: refs/v/x there, the bundle brings v.
    other = tmp_path / "hf2"
    assert run(["import", str(second), "--target", str(other)], capsys)[0] == 0
    before = tree_state(other)
    code, err = run(["import", str(first), "--target", str(other)], capsys)
    assert code == 4 and "refs/v" in err, err
    assert tree_state(other) == before
    # A snapshot of the same commit holds a file `sub` where the bundle has `sub/x.txt`, or the reverse.
    bundle = bundle_of(tmp_path, "sub", {"main": OLD}, "2026-11-20T00:00:00Z")
    commit = read_index(bundle).repos[0].revisions[0][1]
    for name, planted in (("file", "sub"), ("folder", "config.json/inner")):
        t = tmp_path / f"snap-{name}"
        spot = t / HF_REPO / "snapshots" / commit / planted
        spot.parent.mkdir(parents=True)
        spot.write_bytes(b"there before")
        before = tree_state(t)
        code, err = run(["import", str(bundle), "--target", str(t)], capsys)
        assert code == 4 and "cannot be published" in err, err
        assert tree_state(t) == before


# -- one import at a time ----------------------------------------------------------------------------------


@contextmanager
def held(target: Path) -> Iterator[None]:
    with Staging() as other:
        other.lock(target, 0, lambda: LockedError("held"))
        yield


def test_a_second_import_into_the_same_target_exits_75_naming_the_target_and_wait(
    bundles: Bundles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "hf"
    with held(target):
        code, err = run(["import", str(bundles.new), "--target", str(target)], capsys)
        assert code == 75 and str(target) in err and "--wait" in err
        assert list(target.iterdir()) == []
        # Another target is not locked.
        assert run(["import", str(bundles.new), "--target", str(tmp_path / "other")], capsys)[0] == 0


def test_with_wait_the_second_import_waits_for_the_first(
    bundles: Bundles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "hf"
    waiting = threading.Event()

    def wait(stop: threading.Event, seconds: float) -> bool:
        waiting.set()
        return stop.wait(min(seconds, 0.01))

    monkeypatch.setattr(clock_module, "SYSTEM", Clock(wait=wait))  # the clock the CLI hands the import
    result: list[int] = []
    with held(target):
        worker = threading.Thread(
            target=lambda: result.append(
                main_code(["import", str(bundles.new), "--target", str(target), "--wait", "600", "-q"])
            )
        )
        worker.start()
        assert waiting.wait(30)
        assert worker.is_alive() and not (target / HF_REPO).exists()
    worker.join(60)
    assert result == [0]
    assert (target / HF_REPO / "refs" / "main").read_text() == read_index(bundles.new).repos[0].revisions[0][
        1
    ]


@pytest.mark.parametrize("layout", ["hf", "modelscope", "dir"])
def test_concurrent_imports_of_an_older_and_a_newer_bundle_end_with_the_newer(
    bundles: Bundles, layout: str, tmp_path: Path
) -> None:
    new_commit = read_index(bundles.new).repos[0].revisions[0][1]
    for round_, order in enumerate([(bundles.old, bundles.new), (bundles.new, bundles.old)] * 2):
        target = tmp_path / f"t{round_}"
        barrier = threading.Barrier(len(order))
        errors: list[BaseException] = []

        def one(bundle: Path, barrier: threading.Barrier, target: Path, errors: list[BaseException]) -> None:
            barrier.wait()
            try:
                import_bundle(bundle, layout, target, wait=120, clock=SYSTEM)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(b, barrier, target, errors)) for b in order]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors
        if layout == "hf":
            assert (target / HF_REPO / "refs" / "main").read_text() == new_commit
        else:
            folder = target / (f"{MS_REPO}/snapshots/main" if layout == "modelscope" else "org/tiny")
            assert (folder / "config.json").read_bytes() == NEW["config.json"]


@pytest.mark.e2e
def test_installed_mirror_imports_started_together_end_with_the_newer(
    bundles: Bundles, tmp_path: Path
) -> None:
    """Real processes: both start while the target is held, so both wait, then race for it."""
    target = tmp_path / "hf"
    env = fresh_env(tmp_path / "home")
    with held(target):
        procs = [
            subprocess.Popen(
                [*mirror_command(), "import", str(b), "--target", str(target), "--wait", "600", "-q"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for b in (bundles.old, bundles.new)
        ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert (target / HF_REPO / "refs" / "main").read_text() == read_index(bundles.new).repos[0].revisions[0][
        1
    ]


# -- a cache huggingface_hub also writes online ------------------------------------------------------------


def synced_bundle(hub: LoopbackHub, tmp_path: Path, name: str, revisions: list[str]) -> Path:
    store = Store.at(tmp_path / f"store-{name}", clock=SYSTEM)
    settings = Settings.from_env(store.local_root, {"HF_ENDPOINT": hub.url})
    specs = parse_manifest(
        f"version: 1\nmodels:\n  - repo: org/tiny\n    revisions: [{', '.join(revisions)}]\n", "m.yml"
    ).requests()
    result = sync(store, plan_targets(specs), default_source_factory(settings), policy=FAST)
    assert result.exit_code == 0
    return write_bundle(store, select_all(store), tmp_path / f"{name}.tar.zst").path


@pytest.mark.e2e
def test_a_ref_huggingface_hub_moved_online_is_never_moved_back_by_an_older_bundle(
    hub: LoopbackHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = hub.add_commit(
        "org/tiny",
        {"config.json": b'{"v": 1}', "model.safetensors": safetensors_sized(b"w1" * 100)},
        tags=["v1.0"],
    )
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    older = synced_bundle(hub, tmp_path, "older", ["main"])
    second = hub.add_commit(
        "org/tiny", {"config.json": b'{"v": 2}', "model.safetensors": safetensors_sized(b"w2" * 100)}
    )
    cache = tmp_path / "cache"
    refs = cache / HF_REPO / "refs"

    # Online first: huggingface_hub puts main at the second commit, then the older bundle comes.
    run_client(hub, tmp_path, 'out(snapshot_download("org/tiny"))')
    assert (refs / "main").read_text() == second
    code, _ = run(["import", str(older), "--target", str(cache), "--json"], capsys)
    assert code == 0
    assert (refs / "main").read_text() == second
    assert (cache / HF_REPO / "snapshots" / first / "config.json").read_bytes() == b'{"v": 1}'
    before = tree_state(cache)
    code = main_code(["import", str(older), "--target", str(cache), "-q"])
    assert code == 0 and tree_state(cache) == before  # the same bundle again changes nothing

    # Imported first, then moved online with hf_hub_download: the same older bundle again keeps it.
    other = tmp_path / "cache2"
    assert main_code(["import", str(older), "--target", str(other), "-q"]) == 0
    assert (other / HF_REPO / "refs" / "main").read_text() == first
    script = f'out(hf_hub_download("org/tiny", "config.json", cache_dir={str(other)!r}))'
    run_client(hub, tmp_path, script)
    assert (other / HF_REPO / "refs" / "main").read_text() == second
    report = import_bundle(older, "hf", other)
    assert report.repos[0].kept == ("refs/main",) and "as newer than this bundle" in repo_report_line(
        report.repos[0]
    )
    assert (other / HF_REPO / "refs" / "main").read_text() == second
    before = tree_state(other)
    assert import_bundle(older, "hf", other).repos[0].already_present
    assert tree_state(other) == before

    # A bundle that itself lists the online commit under another revision (v1.0) moves main past it.
    third = hub.add_commit(
        "org/tiny", {"config.json": b'{"v": 3}', "model.safetensors": safetensors_sized(b"w3" * 100)}
    )
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000100")
    newer = synced_bundle(hub, tmp_path, "newer", ["main", "v1.0"])
    online = tmp_path / "cache3"
    run_client(
        hub, tmp_path, f'out(snapshot_download("org/tiny", revision="v1.0", cache_dir={str(online)!r}))'
    )
    (online / HF_REPO / "refs" / "main").write_text(first)  # as a download of main at v1.0 time left it
    report = import_bundle(newer, "hf", online)
    assert report.repos[0].kept == ()
    assert (online / HF_REPO / "refs" / "main").read_text() == third
