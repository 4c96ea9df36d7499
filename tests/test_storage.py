"""The storage contract (mirror.storage.base), held by the local folder and the S3 bucket alike: every test
that says `place` runs over both (the bucket on moto's S3 server, over HTTP). Then what only a bucket has:
temporary uploads, multipart, presigned URLs, the lease lock, and errors naming the bucket and endpoint."""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mirror import s3 as objects
from mirror.clock import Clock
from mirror.errors import IntegrityError, Interrupted, LockedError, MirrorError
from mirror.storage import s3 as s3_storage
from mirror.storage.base import ABSENT, ConflictError, ObjectStat, Storage
from mirror.storage.local import LocalStorage
from mirror.storage.s3 import S3Storage
from tests.clocks import FakeClock, ManualClock
from tests.roundtrip import CLOSED_PORT_ENDPOINT
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Bucket

START = 1_764_936_000.0


@dataclass
class Place:
    """One storage location, local or on the bucket; `make` opens it (again) with a clock of its own
    (by default one that stands still, so a lease's renewer waits until the test moves it)."""

    kind: str
    make: Callable[..., Any]
    bucket: S3Bucket | None = None

    def storage(self, clock: Clock | None = None, **options: Any) -> Any:
        return self.make(clock=clock or ManualClock(START).clock, **options)


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Place:
    if request.param == "local":
        return Place("local", lambda **kw: LocalStorage(tmp_path / "store", **kw))
    bucket: S3Bucket = request.getfixturevalue("s3")
    where = objects.parse_s3_url(bucket.url("store"))
    return Place("s3", lambda **kw: S3Storage(where, staging=tmp_path / "staging", **kw), bucket)


@pytest.fixture
def bucket_place(s3: S3Bucket, tmp_path: Path) -> Place:
    where = objects.parse_s3_url(s3.url("store"))
    return Place("s3", lambda **kw: S3Storage(where, staging=tmp_path / "staging", **kw), s3)


def read_all(stream: Any) -> bytes:
    with stream:
        return b"".join(iter(lambda: stream.read(7), b""))


# any object -----------------------------------------------------------------------------------------------
def test_an_object_is_written_looked_at_read_and_deleted(place: Place) -> None:
    storage: Storage = place.storage()
    assert storage.stat("repos/a/record.json") is None and storage.read("repos/a/record.json", 100) is None
    storage.write("repos/a/record.json", b"{}\n")
    assert storage.stat("repos/a/record.json") == ObjectStat(3, "file")
    got = storage.read("repos/a/record.json", 100)
    assert got is not None and got.data == b"{}\n" and got.tag
    storage.delete("repos/a/record.json")
    storage.delete("repos/a/record.json")  # absent is fine
    assert storage.stat("repos/a/record.json") is None


def test_a_stream_reads_the_range_asked(place: Place) -> None:
    storage: Storage = place.storage()
    data = bytes(range(256)) * 40
    storage.write("blobs/x", data)
    assert read_all(storage.open_read("blobs/x")) == data
    assert read_all(storage.open_read("blobs/x", 100)) == data[100:]
    assert read_all(storage.open_read("blobs/x", 100, 1000)) == data[100:1000]
    assert read_all(storage.open_read("blobs/x", 0, 1)) == data[:1]
    assert read_all(storage.open_read("blobs/x", len(data) - 5, len(data) + 50)) == data[-5:]
    assert read_all(storage.open_read("blobs/x", len(data))) == b""
    assert read_all(storage.open_read("blobs/x", 10, 10)) == b""
    with pytest.raises(FileNotFoundError):
        storage.open_read("blobs/missing")


def test_keys_are_every_key_under_a_prefix_sorted_and_relative(place: Place) -> None:
    storage: Storage = place.storage()
    names = ["repos/a/b/c", "repos/a/b.txt", "repos/z", "repos/a/a", "blobs/sha256/ab/abc", "other"]
    for name in names:
        storage.write(name, name.encode())
    assert list(storage.keys("repos/")) == ["repos/a/a", "repos/a/b.txt", "repos/a/b/c", "repos/z"]
    assert list(storage.keys("blobs/sha256/")) == ["blobs/sha256/ab/abc"]
    assert list(storage.keys("nothing/")) == []


# small objects ----------------------------------------------------------------------------------------------
def test_a_conditional_write_refuses_a_changed_or_present_object(place: Place) -> None:
    storage: Storage = place.storage()
    storage.write("repos/refs.json", b"1", expect=ABSENT)
    with pytest.raises(ConflictError, match=r"refs\.json changed since it was read"):
        storage.write("repos/refs.json", b"2", expect=ABSENT)
    first = storage.read("repos/refs.json", 10)
    assert first is not None
    storage.write("repos/refs.json", b"22", expect=first.tag)
    with pytest.raises(ConflictError):
        storage.write("repos/refs.json", b"3", expect=first.tag)  # stale: another writer came between
    second = storage.read("repos/refs.json", 10)
    assert second is not None and second.data == b"22"
    storage.delete("repos/refs.json")
    with pytest.raises(ConflictError):
        storage.write("repos/refs.json", b"4", expect=second.tag)  # deleted meanwhile
    assert storage.stat("repos/refs.json") is None


def test_a_small_object_over_its_limit_is_refused_naming_it(place: Place) -> None:
    storage: Storage = place.storage()
    storage.write("repos/big.json", b"x" * 101)
    with pytest.raises(IntegrityError, match=r"big\.json"):
        storage.read("repos/big.json", 100)
    held = storage.read("repos/big.json", 101)
    assert held is not None and held.data == b"x" * 101


# blobs -------------------------------------------------------------------------------------------------------
def test_a_staged_file_is_published_whole_and_leaves_staging(place: Place) -> None:
    storage: Storage = place.storage()
    storage.write("blobs/sha256/ab/abc", b"old")
    staged = storage.staging() / "download.part"
    staged.write_bytes(b"new content")
    storage.put_file(staged, "blobs/sha256/ab/abc")
    assert not staged.exists()
    assert read_all(storage.open_read("blobs/sha256/ab/abc")) == b"new content"
    assert list(storage.keys("tmp/")) == []  # no temporary upload left behind


def test_a_staging_folder_is_the_same_for_the_next_run(place: Place) -> None:
    assert place.storage().staging() == place.storage().staging()
    assert place.storage().staging().is_dir()


def test_presign_gives_a_url_any_client_fetches_without_credentials(place: Place) -> None:
    storage: Storage = place.storage()
    storage.write("blobs/sha256/ab/abc", b"served bytes")
    url = storage.presign("blobs/sha256/ab/abc", 300)
    if place.kind == "local":
        assert url is None
        return
    # a presigned URL carries the access key's id (public: it names the key), never the secret
    assert url is not None and "X-Amz-Signature=" in url and SECRET_KEY not in url
    with urllib.request.urlopen(url) as answer:  # no credentials: the signature is in the URL
        assert answer.read() == b"served bytes"
    named = storage.presign("blobs/sha256/ab/abc", 300, disposition='attachment; filename="w.bin"')
    assert named is not None
    with urllib.request.urlopen(named) as answer:  # the GET answers with the disposition asked
        assert answer.headers["Content-Disposition"] == 'attachment; filename="w.bin"'


def test_clean_abandoned_removes_staging_leftovers_older_than_asked(place: Place) -> None:
    storage: Storage = place.storage()
    old = storage.staging() / "old.part"
    new = storage.staging() / "new.part"
    old.write_bytes(b"o")
    new.write_bytes(b"n")
    os.utime(old, (START - 7200, START - 7200))
    os.utime(new, (START - 60, START - 60))
    removed = storage.clean_abandoned(3600)
    assert [name.rsplit("/", 1)[-1] for name in removed] == ["old.part"]
    assert not old.exists() and new.exists()


# the writer's lock ------------------------------------------------------------------------------------------
def test_a_second_holder_of_the_lock_gets_locked_after_waiting(place: Place) -> None:
    holder = ManualClock(START)
    with place.storage(holder.clock).lock():
        contender = FakeClock(START)
        with (
            pytest.raises(LockedError, match="another mirror run holds the store lock") as e,
            place.storage(contender.clock).lock(wait=10),
        ):
            pass
        assert e.value.exit_code == 75
        assert sum(contender.waits) >= 10 - 1e-9
    with place.storage().lock(wait=0):  # released on exit
        pass


def test_a_stop_ends_the_wait_for_the_lock(place: Place) -> None:
    holder = ManualClock(START)
    stop = threading.Event()
    with place.storage(holder.clock).lock():
        contender = FakeClock(START, on_wait=lambda seconds: stop.set())
        with pytest.raises(Interrupted), place.storage(contender.clock).lock(wait=3600, stop=stop):
            pass
        assert contender.waits == []


# what only a bucket has -------------------------------------------------------------------------------------
def test_put_file_uploads_under_a_temporary_key_and_the_final_key_appears_only_whole(
    bucket_place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage: S3Storage = bucket_place.storage(part_size=5 << 20)
    assert bucket_place.bucket is not None
    bucket = bucket_place.bucket
    data = os.urandom(1 << 20) * 11  # 11 MiB: three parts
    staged = storage.staging() / "blob.part"
    staged.write_bytes(data)
    seen: list[list[str]] = []
    publish = storage._publish

    def looking(temporary: str, key: str) -> None:
        seen.append(bucket.keys())
        assert bucket.read(f"store/{temporary}") == data  # complete before it is published
        head = bucket.server.client().head_object(Bucket=bucket.name, Key=f"store/{temporary}")
        assert head["ETag"].endswith('-3"')  # uploaded in three parts
        assert staged.exists()  # kept until published
        publish(temporary, key)

    monkeypatch.setattr(storage, "_publish", looking)
    storage.put_file(staged, "blobs/sha256/ab/abc")
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].startswith("store/tmp/uploads/")
    assert bucket.keys() == ["store/blobs/sha256/ab/abc"]
    assert bucket.read("store/blobs/sha256/ab/abc") == data


def test_a_large_blob_is_copied_into_place_in_parts(
    bucket_place: Place, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_storage, "COPY_LIMIT", 5 << 20)
    monkeypatch.setattr(s3_storage, "COPY_PART", 5 << 20)
    storage: S3Storage = bucket_place.storage(part_size=5 << 20)
    data = os.urandom(1 << 20) * 12
    staged = storage.staging() / "blob.part"
    staged.write_bytes(data)
    storage.put_file(staged, "blobs/sha256/ab/abc")
    assert bucket_place.bucket is not None
    bucket = bucket_place.bucket
    assert bucket.read("store/blobs/sha256/ab/abc") == data
    assert bucket.keys() == ["store/blobs/sha256/ab/abc"]
    head = bucket.server.client().head_object(Bucket=bucket.name, Key="store/blobs/sha256/ab/abc")
    assert head["ETag"].endswith('-3"')  # copied by a multipart copy of three parts


def test_clean_abandoned_removes_old_temporary_uploads_and_incomplete_multipart_uploads(
    bucket_place: Place,
) -> None:
    assert bucket_place.bucket is not None
    bucket = bucket_place.bucket
    client = bucket.server.client()
    client.put_object(Bucket=bucket.name, Key="store/tmp/uploads/killed", Body=b"half")
    client.put_object(Bucket=bucket.name, Key="store/blobs/sha256/ab/abc", Body=b"kept")
    then = client.head_object(Bucket=bucket.name, Key="store/tmp/uploads/killed")["LastModified"].timestamp()
    assert bucket_place.storage(FakeClock(then + 60).clock).clean_abandoned(3600) == []
    # moto answers every upload's Initiated as 2010-11-10: here an incomplete upload is always old
    started = client.create_multipart_upload(Bucket=bucket.name, Key="store/tmp/uploads/cut")
    client.create_multipart_upload(Bucket=bucket.name, Key="elsewhere/bundle.tar.zst")  # not the store's
    removed = bucket_place.storage(FakeClock(then + 7200).clock).clean_abandoned(3600)
    assert removed == ["tmp/uploads/killed", "tmp/uploads/cut (incomplete multipart upload)"]
    assert bucket.keys() == ["store/blobs/sha256/ab/abc"]
    uploads = client.list_multipart_uploads(Bucket=bucket.name).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["elsewhere/bundle.tar.zst"]
    assert started["UploadId"] not in {u["UploadId"] for u in uploads}


def test_the_lease_names_its_holder_and_is_deleted_on_release(bucket_place: Place) -> None:
    assert bucket_place.bucket is not None
    with bucket_place.storage(ManualClock(START).clock).lock():
        lease = bucket_place.bucket.read("store/lock")
        assert f"pid {os.getpid()} on {socket.gethostname()}".encode() in lease
        assert b'"expires": ' + str(START + 60).encode() in lease
    assert bucket_place.bucket.keys() == []


def test_an_expired_lease_is_taken_over_and_its_old_holder_told_on_exit(bucket_place: Place) -> None:
    crashed = ManualClock(START)
    with (
        pytest.raises(LockedError, match="expired while this run held it"),
        bucket_place.storage(crashed.clock).lock(),  # never renews: its clock stands still
    ):
        with pytest.raises(LockedError), bucket_place.storage(FakeClock(START + 59).clock).lock():
            pass
        later = ManualClock(START + 61)
        with bucket_place.storage(later.clock).lock():
            assert bucket_place.bucket is not None
            assert b'"expires": ' + str(START + 121).encode() in bucket_place.bucket.read("store/lock")


def test_the_holder_renews_its_lease_so_it_does_not_expire(bucket_place: Place) -> None:
    holder = ManualClock(START)
    with bucket_place.storage(holder.clock, lease=60).lock():
        holder.wait_for_waits(1)  # the renewer waits for a third of the lease
        holder.advance(40)
        holder.wait_for_waits(2)  # it renewed at START + 40 (expires at START + 100) and waits again
        with pytest.raises(LockedError), bucket_place.storage(FakeClock(START + 90).clock).lock():
            pass
    with bucket_place.storage(ManualClock(START + 90).clock).lock(wait=0):  # released: at once
        pass


@pytest.mark.parametrize(
    "left",
    [b'{"holder": "pid 1 on gone", "expires": 1764935000.0}', b"not a lease"],
    ids=["killed", "garbled"],
)
def test_a_lease_left_expired_or_unreadable_is_taken_over(bucket_place: Place, left: bytes) -> None:
    assert bucket_place.bucket is not None
    bucket = bucket_place.bucket
    bucket.server.client().put_object(Bucket=bucket.name, Key="store/lock", Body=left)
    with bucket_place.storage(ManualClock(START).clock).lock(wait=0):
        assert f"pid {os.getpid()}".encode() in bucket.read("store/lock")
    assert bucket.keys() == []


def test_a_holder_whose_lease_was_taken_behind_its_back_is_told_on_exit(bucket_place: Place) -> None:
    assert bucket_place.bucket is not None
    bucket = bucket_place.bucket
    holder = ManualClock(START)
    with (
        pytest.raises(LockedError, match="another run took it over: run again"),
        bucket_place.storage(holder.clock).lock(),
    ):
        holder.wait_for_waits(1)
        bucket.server.client().put_object(Bucket=bucket.name, Key="store/lock", Body=b'{"holder": "x"}')
        holder.advance(20)  # the renewal (or at the latest the release) finds the lease changed
    assert bucket.read("store/lock") == b'{"holder": "x"}'  # not deleted: it is not this run's


def test_a_bucket_stages_under_the_users_cache_one_folder_per_location(
    s3: S3Bucket, isolated_home: Path
) -> None:
    def staging(url: str) -> Path:
        return S3Storage(objects.parse_s3_url(url), clock=FakeClock().clock).staging()

    assert staging(s3.url("a")) == staging(s3.url("a"))
    assert staging(s3.url("a")) != staging(s3.url("b"))
    assert staging(s3.url("a")).parent == isolated_home / ".cache" / "mirror" / "s3-staging"


# errors name the bucket and the endpoint, never a credential ------------------------------------------------
def assert_names_bucket(message: str, bucket: str, endpoint: str, check: str) -> None:
    assert f"bucket '{bucket}' at {endpoint}" in message and check in message
    assert ACCESS_KEY not in message and SECRET_KEY not in message


def test_a_bucket_is_a_store_when_empty_or_holding_a_store(bucket_place: Place) -> None:
    assert bucket_place.bucket is not None
    client, name = bucket_place.bucket.server.client(), bucket_place.bucket.name
    storage = bucket_place.storage()
    assert storage.problem() is None
    client.put_object(Bucket=name, Key="store/blobs/sha256/ab/abc", Body=b"x")
    assert storage.problem() is None
    client.put_object(Bucket=name, Key="other/photo.jpg", Body=b"x")
    other = S3Storage(objects.parse_s3_url(f"s3://{name}/other"), clock=FakeClock().clock)
    assert other.problem() == "it holds neither blobs/ nor repos/: it is not a mirror store"


def test_a_missing_bucket_is_named_with_its_endpoint(s3: S3Bucket) -> None:
    storage = S3Storage(objects.parse_s3_url(f"s3://{s3.name}-missing/store"), clock=FakeClock().clock)
    with pytest.raises(MirrorError) as e:
        storage.problem()
    assert_names_bucket(str(e.value), f"{s3.name}-missing", s3.server.endpoint, "the bucket does not exist")


def test_an_unreachable_endpoint_is_named(s3: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", CLOSED_PORT_ENDPOINT)
    objects.client.cache_clear()
    storage = S3Storage(objects.parse_s3_url(s3.url("store")), clock=FakeClock().clock)
    with pytest.raises(MirrorError) as e:
        storage.problem()
    assert_names_bucket(str(e.value), s3.name, CLOSED_PORT_ENDPOINT, "cannot be reached")


@contextlib.contextmanager
def authenticating(s3: S3Bucket) -> Iterator[tuple[str, str]]:
    """moto checking signatures and keys (it accepts any by default): a user of its IAM allowed S3, whose
    key and secret are yielded; checks are off again afterwards."""
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=s3.server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    user = f"{s3.name}-user"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="s3",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    reset_auth(s3, b"0")  # every request from now on
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        reset_auth(s3, b"inf")


def reset_auth(s3: S3Bucket, count: bytes) -> None:
    """moto checks credentials on requests after the first `count` ("inf": never)."""
    url = f"{s3.server.endpoint}/moto-api/reset-auth"
    request = urllib.request.Request(url, data=count, method="POST", headers={"Content-Type": "text/plain"})
    urllib.request.urlopen(request).close()


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_refused_credentials_are_named_without_showing_them(
    s3: S3Bucket, monkeypatch: pytest.MonkeyPatch, wrong: str
) -> None:
    with authenticating(s3) as (key_id, secret):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id if wrong == "secret" else ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        objects.client.cache_clear()
        storage = S3Storage(objects.parse_s3_url(s3.url("store")), clock=FakeClock().clock)
        with pytest.raises(MirrorError) as e:
            storage.problem()
    message = str(e.value)
    check = "the secret key does not match" if wrong == "secret" else "the access key is not known"
    assert_names_bucket(message, s3.name, s3.server.endpoint, check)
    assert key_id not in message and secret not in message


# memory ------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_large_object_is_read_in_small_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's server in a process of its own (it holds the object in memory): this process holds only
    the stream's buffer while 64 MiB go through."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, server)
        from tests.s3server import S3Server

        bucket = S3Server(f"http://127.0.0.1:{port}", server=None).new_bucket()
        for name, value in bucket.env.items():
            monkeypatch.setenv(name, value)
        objects.client.cache_clear()
        big = tmp_path / "big"
        with open(big, "wb") as f:
            for _ in range(64):
                f.write(os.urandom(1 << 20))
        expected = hashlib.sha256(big.read_bytes()).hexdigest()
        bucket.server.client().upload_file(os.fspath(big), bucket.name, "store/blobs/big")
        storage = S3Storage(objects.parse_s3_url(bucket.url("store")), clock=FakeClock().clock)
        tracemalloc.start()
        try:
            digest = hashlib.sha256()
            with storage.open_read("blobs/big") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert digest.hexdigest() == expected
        assert peak < 16 << 20, peak
    finally:
        server.terminate()
        server.wait()
        objects.client.cache_clear()


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        assert server.poll() is None, "moto's server exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        threading.Event().wait(0.05)
    raise AssertionError("moto's server did not start")


def test_a_folder_lists_a_link_as_a_key_and_never_follows_one_to_a_folder(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store", clock=FakeClock().clock)
    storage.write("repos/a/file", b"x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(b"s")
    (tmp_path / "store" / "repos" / "a" / "to-folder").symlink_to(tmp_path / "outside")
    (tmp_path / "store" / "repos" / "a" / "to-file").symlink_to(tmp_path / "outside" / "secret")
    assert list(storage.keys("repos/")) == ["repos/a/file", "repos/a/to-file"]
    assert list(storage.keys("")) == ["repos/a/file", "repos/a/to-file"]
