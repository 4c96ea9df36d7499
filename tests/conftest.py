"""Shared pytest fixtures. Each section is owned by the part of the project that uses it."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from mirror.clock import SYSTEM
from mirror.hashing import git_blob_sha1
from mirror.repo import RepoKey
from mirror.snapshot import FileRecord, Snapshot
from mirror.store import Store
from tests.hub import LoopbackHub
from tests.modelfiles import safetensors_sized
from tests.s3server import S3Bucket, S3Server, start_s3_server
from tests.storages import STORAGES, make_storage
from tests.tiers import (  # noqa: F401 - pytest's hooks for the fast and the end-to-end tier
    pytest_collection,
    pytest_collection_modifyitems,
    pytest_runtest_call,
    pytest_runtest_setup,
    pytest_runtest_teardown,
)


@pytest.fixture(autouse=True)
def mirror_logger_put_back() -> Iterator[None]:
    """An in-process CLI run (`setup_logging`) gives the `mirror` logger a handler of its own and stops it
    propagating; put it back after each test, so that `caplog` sees the log lines of every later test."""
    logger = logging.getLogger("mirror")
    handlers, level, propagate = logger.handlers[:], logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
def hub() -> Iterator[LoopbackHub]:
    """A loopback hub on 127.0.0.1 for one test (a test using it is end-to-end: tests/tiers.py)."""
    with LoopbackHub() as h:
        yield h


# ==================================================================================================
# Bundle and import fixtures (tests/test_bundle.py, tests/test_import.py)
# ==================================================================================================


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1, one for the whole run (each test takes a fresh bucket: `s3`)."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh, empty bucket, with this process's AWS_* settings pointing at the server (mirror's S3
    client is built again from them)."""
    from mirror import s3 as mirror_s3

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    mirror_s3.client.cache_clear()
    yield s3_server.new_bucket()
    mirror_s3.client.cache_clear()


@pytest.fixture(params=STORAGES)
def storage_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store over each storage of `tests.storages.STORAGES` in turn."""
    return Store(make_storage(request.param, tmp_path / "store", request, SYSTEM), clock=SYSTEM)


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME and every cache/data variable into tmp_path so no test touches the real caches."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / ".cache" / "huggingface"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / ".cache" / "huggingface" / "hub"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(home / ".cache" / "modelscope" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return home


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer text the hub commits in place of an LFS file."""
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


def file_record(path: str, data: bytes, lfs: bool) -> FileRecord:
    """A FileRecord as a sync records it: the git oid is of the pointer for LFS files."""
    return FileRecord(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        oid=git_blob_sha1(lfs_pointer(data) if lfs else data),
        lfs=lfs,
    )


def fake_commit(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class SyntheticRepo:
    key: RepoKey
    commits: dict[str, str]  # revision name -> commit
    files: dict[str, dict[str, bytes]]  # commit -> path -> content


def put_repo(
    store: Store,
    repo_id: str,
    revisions: Mapping[str, Mapping[str, bytes]],
    *,
    lfs: Iterable[str] = ("*.safetensors", "*.bin"),
    source: str = "huggingface",
    repo_type: str = "model",
    synced_at: str = "2026-11-20T10:00:00Z",
    complete: bool = True,
) -> SyntheticRepo:
    """Put a synthetic repo into a store: revision name -> {path: content}.

    Revisions with the same files get the same commit; paths matching an `lfs` glob are LFS files.
    """
    lfs = tuple(lfs)
    key = RepoKey(source, repo_type, repo_id)
    commits: dict[str, str] = {}
    files: dict[str, dict[str, bytes]] = {}
    for name, content in revisions.items():
        commit = fake_commit(
            source, repo_type, repo_id, sorted((p, hashlib.sha256(d).digest()) for p, d in content.items())
        )
        records = []
        for path, data in content.items():
            record = file_record(path, data, any(fnmatchcase(path, g) for g in lfs))
            records.append(record)
            if not store.has_blob(record.sha256):
                tmp = store.temp_path(f"put-{record.sha256}")
                tmp.write_bytes(data)
                store.add_blob(tmp, record.sha256)
        store.write_snapshot(
            Snapshot(
                source, repo_type, repo_id, commit, tuple(records), complete=complete, synced_at=synced_at
            )
        )
        commits[name] = commit
        files[commit] = dict(content)
    store.set_refs(key, commits, synced_at)
    return SyntheticRepo(key, commits, files)


@dataclass(frozen=True)
class SampleStore:
    store: Store
    tiny: SyntheticRepo  # org/tiny: main and v1.0 share most files, nested folders, LFS weights
    gpt2: SyntheticRepo  # a short id sharing a file with org/tiny
    data: SyntheticRepo  # a dataset


TINY_V1 = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}\n',
    "tokenizer.json": b'{"vocab": ["a", "b", "c"]}\n' * 50,
    "model.safetensors": safetensors_sized(bytes(range(256)) * 64),  # valid: an export refuses an invalid one
    "sub/dir/weights.bin": b"\x00\x01weights" * 1000,
    "README.md": b"# tiny\n",
}
TINY_MAIN = {
    **TINY_V1,
    "config.json": b'{"model_type": "bert", "hidden_size": 16}\n',
    "extra/notes.txt": b"new",
}


@pytest.fixture
def sample_store(tmp_path: Path, isolated_home: Path) -> SampleStore:
    store = Store.at(tmp_path / "store", clock=SYSTEM)
    tiny = put_repo(store, "org/tiny", {"main": TINY_MAIN, "v1.0": TINY_V1}, synced_at="2026-11-20T10:00:00Z")
    gpt2 = put_repo(
        store,
        "gpt2",
        {"main": {"config.json": b'{"model_type": "gpt2"}\n', "tokenizer.json": TINY_V1["tokenizer.json"]}},
        synced_at="2026-11-21T08:30:00Z",
    )
    data = put_repo(
        store,
        "org/data",
        {"main": {"data/train.csv": b"a,b\n1,2\n"}},
        repo_type="dataset",
        synced_at="2026-11-19T00:00:00Z",
    )
    return SampleStore(store, tiny, gpt2, data)


def killed_in_child(action: Callable[[], object], what: str) -> bool:
    """Run action in a forked child, which may SIGKILL itself (a kill hook); whether it was killed. An
    exception in the child fails the test."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            action()
        except BaseException:  # noqa: BLE001 - reported to the parent as exit 1
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1), f"{what} failed in the child"
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def env_for_subprocess(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a child process: the current one with `extra` set (the isolated HOME included)."""
    env = dict(os.environ)
    env.update(extra)
    env["HOME"] = str(home)
    return env


# ==================================================================================================
# (other sections below)
# ==================================================================================================
