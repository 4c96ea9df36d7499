"""Bundles in a bucket: `export -o s3://...` streams the bundle (and its .sha256, .sig, volumes) to the bucket as
a multipart upload; `import`, `verify` and `inspect` read it back streaming, with the same verification as a
local file. Against moto's S3 server on 127.0.0.1 (the `s3` fixture), through the CLI in process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from moto.core.authorization import enable_iam_authentication

from mirror import objects
from mirror.clock import SYSTEM
from mirror.errors import MirrorError
from mirror.export import export
from mirror.objects import ObjectPath
from mirror.progress import NullProgress
from mirror.signing import keygen
from mirror.store import Store
from tests.conftest import SampleStore, put_repo
from tests.modelfiles import safetensors_sized
from tests.roundtrip import CLOSED_PORT_ENDPOINT, fresh_env, mirror_command, tree_contents
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Bucket
from tests.test_exits import run
from tests.test_resources import peak_rss_mb, put_big_model

BIG = 13 << 20  # incompressible bytes: a bundle of three parts and a dozen ranges at the sizes below


@pytest.fixture
def store(sample_store: SampleStore, monkeypatch: pytest.MonkeyPatch) -> SampleStore:
    """The sample store and a model with an incompressible weights file; the upload's parts and the read's
    ranges made small (the service's least part, 5 MiB), so that this bundle takes several of each."""
    put_repo(
        sample_store.store,
        "org/big",
        {"main": {"model.safetensors": safetensors_sized(os.urandom(BIG)), "config.json": b"{}"}},
    )
    monkeypatch.setattr(objects, "PART", 5 << 20)
    monkeypatch.setattr(objects, "RANGE", 1 << 20)
    return sample_store


def mirror(*args: str | Path, code: int = 0) -> Any:
    """`mirror ARGS --json` in process: its JSON result (or error), checked to exit with `code`."""
    result = run(*args, "--json")
    assert result.exit_code == code, result.stderr
    return json.loads(result.stdout)


def fail(*args: str | Path, code: int) -> str:
    """`mirror ARGS`, which must fail with `code`: its message (stderr)."""
    result = run(*args)
    assert result.exit_code == code, result.output
    return result.stderr


def uploads(s3: S3Bucket) -> list[Any]:
    """The multipart uploads started and neither completed nor abandoned."""
    answer = s3.server.client().list_multipart_uploads(Bucket=s3.name)
    return list(answer.get("Uploads", []))


def flip_byte(s3: S3Bucket, key: str, at: int) -> None:
    data = bytearray(s3.read(key))
    data[at] ^= 0x55
    s3.server.client().put_object(Bucket=s3.name, Key=key, Body=bytes(data))


def test_a_bundle_exported_to_a_bucket_is_the_local_one_and_imports_alike(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    root = store.store.local_root
    local = tmp_path / "out" / "models.tar.zst"
    mirror("export", "--store", root, "-o", local)
    url = s3.url("exports/models.tar.zst")
    written = mirror("export", "--store", root, "-o", url)
    assert written["path"] == url
    assert s3.keys() == ["exports/models.tar.zst", "exports/models.tar.zst.sha256"]
    assert s3.read("exports/models.tar.zst") == local.read_bytes()  # byte-identical, streamed in parts
    assert s3.read("exports/models.tar.zst.sha256") == local.with_name("models.tar.zst.sha256").read_bytes()
    assert written["size"] > 2 * objects.PART and uploads(s3) == []

    imported = mirror("import", url, "--target", tmp_path / "from-s3")
    mirror("import", local, "--target", tmp_path / "from-disk")
    assert imported["bundles"][0]["bundle"] == url
    assert tree_contents(tmp_path / "from-s3") == tree_contents(tmp_path / "from-disk")
    big = next((tmp_path / "from-s3" / "models--org--big" / "snapshots").glob("*/model.safetensors"))
    assert big.stat().st_size == BIG

    checked = mirror("verify", url)
    assert checked == [{**checked[0], "bundle": url, "ok": True, "transfer_checked": True}]
    assert mirror("inspect", url) == mirror("inspect", local)


def test_the_layout_store_and_a_delta_take_a_bundle_from_the_bucket(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    root = store.store.local_root
    first = s3.url("first.tar.zst")
    mirror("export", "--store", root, "-o", first)
    mirror("import", first, "--layout", "store", "--target", tmp_path / "far")
    put_repo(store.store, "org/new", {"main": {"config.json": b'{"new": 1}'}})
    delta = s3.url("delta.tar.zst")
    written = mirror("export", "--store", root, "-o", delta, "--since", first)
    assert written["in_target"]["files"] > 0  # what the first bundle carried is left to the far side
    mirror("import", delta, "--layout", "store", "--target", tmp_path / "far")
    assert mirror("verify", "--layout", "store", "--target", tmp_path / "far")[0]["ok"]


def test_signed_volumes_go_to_the_bucket_beside_each_other(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    root = store.store.local_root
    mirror("export", "--store", root, "-o", s3.url("v/set.tar.zst"), "--split", "3M")
    many = [k for k in s3.keys("v/") if k.endswith(".tar.zst")]
    assert len(many) == 5
    keys = keygen(tmp_path / "site")
    written = mirror(
        "export", "--store", root, "-o", s3.url("v/set.tar.zst"), "--split", "6M", "--sign", keys.private_key
    )
    local = mirror("export", "--store", root, "-o", tmp_path / "set.tar.zst", "--split", "6M")
    names = [Path(v["path"]).name for v in local["volumes"]]
    assert len(names) == 3
    assert [v["path"] for v in written["volumes"]] == [s3.url(f"v/{n}") for n in names]
    # the volumes of the earlier set are gone: the prefix never mixes two sets
    assert s3.keys("v/") == sorted(f"v/{n}{side}" for n in names for side in ("", ".sha256", ".sig"))
    for name in names:
        assert s3.read(f"v/{name}") == (tmp_path / name).read_bytes()

    urls = [s3.url(f"v/{n}") for n in reversed(names)]  # any order
    report = mirror("import", *urls, "--target", tmp_path / "from-s3", "--trust", keys.public_key)
    assert report["bundles"][0]["volumes"] == names
    mirror("import", *(tmp_path / n for n in names), "--target", tmp_path / "from-disk")
    trusted = tree_contents(tmp_path / "from-s3")
    assert any(path.startswith(".locks/mirror-trust/") for path in trusted)  # the sequence accepted
    assert {p: c for p, c in trusted.items() if not p.startswith(".locks")} == tree_contents(
        tmp_path / "from-disk"
    )


def test_a_signed_bundle_in_the_bucket_is_trusted_and_a_forged_signature_refused(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    keys = keygen(tmp_path / "site")
    other = keygen(tmp_path / "other")
    url = s3.url("signed.tar.zst")
    written = mirror("export", "--store", store.store.local_root, "-o", url, "--sign", keys.private_key)
    assert written["signature"]["path"] == f"{url}.sig"
    assert s3.keys() == ["signed.tar.zst", "signed.tar.zst.sha256", "signed.tar.zst.sig"]
    mirror("import", url, "--target", tmp_path / "cache", "--trust", keys.public_key)

    message = fail("import", url, "--target", tmp_path / "refused", "--trust", other.public_key, code=4)
    assert "signed.tar.zst.sig is signed by key" in message and "not trusted" in message
    flip_byte(s3, "signed.tar.zst.sig", 20)
    message = fail("import", url, "--target", tmp_path / "refused", "--trust", keys.public_key, code=4)
    assert "signed.tar.zst.sig" in message
    assert not (tmp_path / "refused").exists()

    # an export without --sign removes the stale signature beside the new bundle
    mirror("export", "--store", store.store.local_root, "-o", url)
    assert s3.keys() == ["signed.tar.zst", "signed.tar.zst.sha256"]
    message = fail("import", url, "--target", tmp_path / "refused", "--trust", keys.public_key, code=4)
    assert "is not signed" in message


def test_a_damaged_object_is_refused_as_a_damaged_file_is(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    local = tmp_path / "b.tar.zst"
    mirror("export", "--store", store.store.local_root, "-o", local)
    url = s3.url("b.tar.zst")
    mirror("export", "--store", store.store.local_root, "-o", url)
    at = local.stat().st_size // 2  # in the big weights, in a frame of their own
    data = bytearray(local.read_bytes())
    data[at] ^= 0x55
    local.write_bytes(bytes(data))
    flip_byte(s3, "b.tar.zst", at)

    for command in (["verify"], ["import", "--target", tmp_path / "cache"]):
        on_disk = fail(*command[:1], local, *command[1:], code=4)
        in_bucket = fail(*command[:1], url, *command[1:], code=4)
        assert url in in_bucket
        assert in_bucket.replace(url, str(local)) == on_disk
    assert not (tmp_path / "cache").exists()


def test_a_truncated_object_and_a_wrong_sha256_beside_it_are_refused(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    url = s3.url("b.tar.zst")
    mirror("export", "--store", store.store.local_root, "-o", url)
    client = s3.server.client()
    client.put_object(Bucket=s3.name, Key="b.tar.zst.sha256", Body=b"0" * 64 + b"  b.tar.zst\n")
    assert "the bundle changed in transfer" in fail("verify", url, code=4)
    client.put_object(Bucket=s3.name, Key="b.tar.zst", Body=s3.read("b.tar.zst")[:-30000])
    message = fail("verify", url, code=4)
    assert url in message and "truncated" in message


class _StopAt(NullProgress):
    """A progress sink that interrupts the export once `at` bytes are packed, as Ctrl-C would."""

    def __init__(self, at: int) -> None:
        self._at, self._done = at, 0

    def update(self, n: int) -> None:
        self._done += n
        if self._done >= self._at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("earlier", [False, True])
@pytest.mark.parametrize("cause", ["damaged", "interrupted"])
def test_a_failed_export_leaves_nothing_under_the_key_and_no_upload(
    store: SampleStore, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch, earlier: bool, cause: str
) -> None:
    """The export fails after parts of the bundle are up (the store's copy of a file packed after the big
    one is damaged, or Ctrl-C there): the upload is abandoned, and the key holds what it held before."""
    later = put_repo(
        store.store, "org/later", {"main": {"model.safetensors": safetensors_sized(os.urandom(6 << 20))}}
    )
    if cause == "damaged":
        (sha,) = {f.sha256 for f in store.store.read_snapshot(later.key, later.commits["main"]).files}
        with open(store.store.local_blob(sha), "r+b") as blob:
            blob.seek(3 << 20)
            blob.write(b"X")
    out = ObjectPath(s3.name, "x/models.tar.zst")
    if earlier:
        s3.server.client().put_object(Bucket=s3.name, Key=out.key, Body=b"earlier")
    under_way: list[list[Any]] = []
    abort = objects.ObjectWriter.abort

    def spy(writer: objects.ObjectWriter) -> None:
        under_way.append(uploads(s3))
        abort(writer)

    monkeypatch.setattr(objects.ObjectWriter, "abort", spy)
    with pytest.raises(MirrorError if cause == "damaged" else KeyboardInterrupt):
        export(
            store.store,
            None,
            out,
            threads=1,
            progress=_StopAt(BIG + (4 << 20) if cause == "interrupted" else 1 << 40),
        )
    assert [len(u) for u in under_way] == [1]  # an upload was under way when it failed
    assert uploads(s3) == []
    assert s3.keys() == (["x/models.tar.zst"] if earlier else [])
    if earlier:
        assert s3.read(out.key) == b"earlier"


def test_export_over_an_object_replaces_it(store: SampleStore, s3: S3Bucket) -> None:
    s3.server.client().put_object(Bucket=s3.name, Key="b.tar.zst.sha256", Body=b"stale")
    s3.server.client().put_object(Bucket=s3.name, Key="b.tar.zst", Body=b"old")
    written = mirror("export", "--store", store.store.local_root, "-o", s3.url("b.tar.zst"))
    assert s3.read("b.tar.zst.sha256").decode() == f"{written['sha256']}  b.tar.zst\n"
    assert len(s3.read("b.tar.zst")) == written["size"]


def no_secret(message: str) -> str:
    assert ACCESS_KEY not in message and SECRET_KEY not in message
    return message


def test_a_missing_bucket_or_object_is_exit_1_naming_bucket_and_endpoint(
    store: SampleStore, s3: S3Bucket, tmp_path: Path
) -> None:
    endpoint = s3.server.endpoint
    missing = f"s3://{s3.name}-gone/b.tar.zst"
    for args in (
        ["export", "--store", store.store.local_root, "-o", missing],
        ["import", missing, "--target", tmp_path / "cache"],
        ["verify", missing],
        ["inspect", missing],
    ):
        message = no_secret(fail(*args, code=1))
        assert f"bucket '{s3.name}-gone' at {endpoint}" in message and "the bucket does not exist" in message
    message = no_secret(fail("verify", s3.url("absent.tar.zst"), code=1))
    assert f"{s3.url('absent.tar.zst')}: bucket '{s3.name}' at {endpoint}: there is no object" in message
    assert fail("export", "--store", store.store.local_root, "-o", f"s3://{s3.name}/", code=2)
    assert not (tmp_path / "cache").exists()


def test_wrong_credentials_are_exit_1_naming_bucket_and_endpoint(store: SampleStore, s3: S3Bucket) -> None:
    url = s3.url("b.tar.zst")
    mirror("export", "--store", store.store.local_root, "-o", url)
    with enable_iam_authentication():  # the service now knows no key: ours is refused
        for args in (["export", "--store", store.store.local_root, "-o", url], ["verify", url]):
            message = no_secret(fail(*args, code=1))
            assert f"bucket '{s3.name}' at {s3.server.endpoint}" in message
            assert "access key is not known" in message or "access denied" in message
    assert uploads(s3) == []


def test_an_unreachable_endpoint_is_exit_1_naming_it(
    store: SampleStore, s3: S3Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", CLOSED_PORT_ENDPOINT)
    objects.client.cache_clear()
    for args in (
        ["export", "--store", store.store.local_root, "-o", s3.url("b.tar.zst")],
        ["verify", s3.url("b")],
    ):
        message = no_secret(fail(*args, code=1))
        assert f"bucket '{s3.name}' at {CLOSED_PORT_ENDPOINT}" in message and "cannot be reached" in message


def test_an_object_replaced_while_it_is_read_fails_the_read(store: SampleStore, s3: S3Bucket) -> None:
    path = ObjectPath(s3.name, "b.tar.zst")
    export(store.store, None, path)
    with objects.ObjectReader(path) as reader:
        assert reader.read(10)
        s3.server.client().put_object(Bucket=s3.name, Key=path.key, Body=b"other")
        with pytest.raises(MirrorError, match="was replaced while it was being read"):
            while reader.read(1 << 20):
                pass


def test_parts_grow_with_the_object_to_stay_within_the_services_limit() -> None:
    assert objects.part_size(None) == objects.part_size(1 << 30) == objects.PART
    huge = 4 << 40  # 4 TiB
    assert objects.part_size(huge) * (objects.MAX_PARTS - 1) >= huge
    assert objects.part_size(huge) % (1 << 20) == 0


def test_an_s3_url_names_an_object() -> None:
    assert str(ObjectPath.parse("s3://b-1/a/b.tar.zst")) == "s3://b-1/a/b.tar.zst"
    path = ObjectPath.parse("s3://b-1/a/b.tar.zst")
    assert (path.name, path.folder, str(path.with_name("c"))) == ("b.tar.zst", "a/", "s3://b-1/a/c")
    assert ObjectPath.parse("s3://b-1/top").folder == ""
    for url in ("s3://b-1", "s3://b-1/", "s3://b-1/dir/"):
        with pytest.raises(MirrorError, match="names no object"):
            ObjectPath.parse(url)


@pytest.mark.e2e
def test_memory_stays_flat_exporting_to_and_importing_from_a_bucket(s3: S3Bucket, tmp_path: Path) -> None:
    """The installed `mirror`, in a child process: the peak memory of an export to the bucket and of an
    import from it does not grow with the bundle, four times larger here, many times the part size."""
    peaks: dict[int, tuple[float, float]] = {}
    for size in (96 << 20, 384 << 20):
        root = tmp_path / f"store{size}"
        store = Store.at(root, clock=SYSTEM)
        put_big_model(store, size, incompressible=True)
        env = {**fresh_env(tmp_path / "home"), **s3.env}
        url = s3.url(f"big{size}.tar.zst")
        export_mb = peak_rss_mb([*mirror_command(), "export", "--store", str(root), "-o", url], env)
        target = tmp_path / f"cache{size}"
        import_mb = peak_rss_mb([*mirror_command(), "import", url, "--target", str(target)], env)
        assert next(target.glob("models--org--big/snapshots/*/model.safetensors")).stat().st_size == size
        peaks[size] = (export_mb, import_mb)
        shutil.rmtree(root)
        shutil.rmtree(target)
    print(f"peak RSS (export, import) by weights size: {peaks}")
    (small_export, small_import), (big_export, big_import) = peaks.values()
    assert big_export < small_export + 24, peaks  # the bundle grew by 288 MiB
    assert big_import < small_import + 24, peaks
    assert big_export < 250 and big_import < 250, peaks
