"""`mirror verify --target` after the user removed revisions with huggingface_hub's own cache tools: what
they removed is reported as removed (exit 0); real damage beside it still fails (exit 4)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

from mirror.bundle import select_all, write_bundle
from mirror.cli import main
from mirror.importing import import_bundle
from tests.conftest import SampleStore


def _verify(cache: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--target", str(cache), "--layout", "hf", *extra])
    return int(exit_info.value.code or 0), capsys.readouterr().out


@pytest.fixture(params=[True, False], ids=["symlinks", "no-symlinks"])
def cache(request: pytest.FixtureRequest, sample_store: SampleStore, tmp_path: Path) -> Path:
    target = tmp_path / "hub"
    bundle = write_bundle(sample_store.store, select_all(sample_store.store), tmp_path / "b.tar.zst").path
    import_bundle(bundle, "hf", target, symlinks=request.param)
    return target


def _delete(cache: Path, *commits: str) -> None:
    """What `hf cache rm` does: huggingface_hub's own delete strategy, executed."""
    scan_cache_dir(cache).delete_revisions(*commits).execute()


def test_revisions_removed_with_huggingface_hub_are_reported_not_failed(
    cache: Path, sample_store: SampleStore, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny, gpt2 = sample_store.tiny, sample_store.gpt2
    _delete(cache, tiny.commits["v1.0"], gpt2.commits["main"])  # one revision of two; a whole repo
    assert not (cache / "models--org--tiny" / "snapshots" / tiny.commits["v1.0"]).exists()
    assert not (cache / "models--gpt2").exists()
    code, out = _verify(cache, capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[-1].startswith(f"ok  {cache}")
    assert len(lines) == 2 and tiny.commits["v1.0"] in lines[0] and "removed" in lines[0]
    code, out = _verify(cache, capsys, "--json")
    (result,) = json.loads(out)
    assert code == 0 and result["ok"] and result["problems"] == []
    assert len(result["removed"]) == 1 and "models--org--tiny" in result["removed"][0]
    # The rest is still checked: main's files are all counted.
    assert result["files"] == len(sample_store.tiny.files[tiny.commits["main"]]) + 1  # + the dataset's


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    _rewrite(path, bytes(data))


def _rewrite(path: Path, data: bytes) -> None:
    real = path.resolve()
    os.chmod(real, 0o644)
    real.write_bytes(data)


def _truncate(path: Path) -> None:
    _rewrite(path, path.read_bytes()[:-3])


def _replace_blob(path: Path) -> None:
    real = path.resolve()
    real.unlink()
    real.write_bytes(b"something else entirely")


def _link_elsewhere(path: Path) -> None:
    other = next(p for p in path.parent.iterdir() if p.name != path.name and p.is_file())
    path.unlink()
    if other.is_symlink():
        os.symlink(os.readlink(other), path)
    else:
        shutil.copyfile(other, path)


@pytest.mark.parametrize("damage", [_flip, _truncate, _replace_blob, _link_elsewhere, Path.unlink])
def test_damage_beside_a_removed_revision_still_fails(
    cache: Path,
    sample_store: SampleStore,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
) -> None:
    tiny = sample_store.tiny
    _delete(cache, tiny.commits["v1.0"])
    victim = cache / "models--org--tiny" / "snapshots" / tiny.commits["main"] / "config.json"
    damage(victim)
    code, out = _verify(cache, capsys)
    assert code == 4, out
    assert "config.json" in out and tiny.commits["v1.0"] not in out


def test_a_snapshot_folder_removed_by_hand_while_a_ref_names_it_is_damage(
    cache: Path, sample_store: SampleStore, capsys: pytest.CaptureFixture[str]
) -> None:
    commit = sample_store.tiny.commits["main"]
    shutil.rmtree(cache / "models--org--tiny" / "snapshots" / commit)  # refs/main still points there
    code, out = _verify(cache, capsys)
    assert code == 4 and "missing" in out and "removed" not in out


def test_a_removed_ref_alone_is_not_a_removed_revision(
    cache: Path, sample_store: SampleStore, capsys: pytest.CaptureFixture[str]
) -> None:
    """A revision whose folder stays is checked whole, whatever happened to its refs."""
    tiny = sample_store.tiny
    (cache / "models--org--tiny" / "refs" / "v1.0").unlink()
    (cache / "models--org--tiny" / "snapshots" / tiny.commits["v1.0"] / "README.md").unlink()
    code, out = _verify(cache, capsys)
    assert code == 4 and "README.md: missing" in out


def test_every_repo_removed_leaves_nothing_to_verify(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = scan_cache_dir(cache)
    _delete(cache, *(rev.commit_hash for repo in info.repos for rev in repo.revisions))
    code, _ = _verify(cache, capsys)
    assert code == 1  # no receipt left at all: as for any target mirror never imported into
