"""Signed bundles: keygen, export --sign, import --trust; every rejection exits 4 with the target untouched."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from huggingface_hub import scan_cache_dir

from mirror.bundle import BundleIndex, read_index, select_all, write_bundle
from mirror.cli import main
from mirror.clock import Clock, iso
from mirror.errors import IntegrityError, UsageError
from mirror.export import Signer
from mirror.export import export as export_bundles
from mirror.importing import BundleImportError, ImportUnit, Volume, import_bundle, import_unit
from mirror.layouts import make_layout
from mirror.signing import (
    FolderSequences,
    TrustedKey,
    TrustPolicy,
    check_trust,
    key_id,
    keygen,
    load_private_key,
    load_public_key,
    read_index_bytes,
    read_sequence,
    read_signature,
    sign_bundle,
    signature_path,
)
from mirror.units import parse_duration
from tests.conftest import SampleStore
from tests.roundtrip import fresh_env, run_mirror

NOW = 1_900_000_000  # the fake clock's time: signing and trust never read the wall clock
CLOCK = Clock(time=lambda: float(NOW))


def trust_dir(layout: str, target: Path) -> Path:
    """Where the layout keeps the sequences accepted per key."""
    sequences = make_layout(layout, target).sequences
    assert isinstance(sequences, FolderSequences)
    return sequences.folder


def accepted(state: Path) -> int | None:
    """The sequence the trust state file `<key id>.json` holds."""
    return read_sequence(FolderSequences(state.parent), state.stem)


@dataclass(frozen=True)
class Keys:
    private: Ed25519PrivateKey
    public: TrustedKey
    prefix: Path

    @property
    def pub_file(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".pub")

    @property
    def key_file(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".key")


def make_keys(folder: Path, name: str) -> Keys:
    files = keygen(folder / name)
    return Keys(load_private_key(files.private_key), load_public_key(files.public_key), folder / name)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys", "a")


@pytest.fixture
def other_keys(tmp_path: Path) -> Keys:
    return make_keys(tmp_path / "keys", "b")


def export(sample_store: SampleStore, out: Path, count: int | None = None) -> Path:
    selection = select_all(sample_store.store)[:count]
    return write_bundle(sample_store.store, selection, out).path


@pytest.fixture
def bundle(sample_store: SampleStore, tmp_path: Path) -> Path:
    return export(sample_store, tmp_path / "out" / "b.tar.zst")


def tree_hash(root: Path) -> str:
    """Every entry under root (and root itself): path, kind, mode, mtime, content or link target."""
    digest = hashlib.sha256()
    if not root.exists():
        return "absent"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in ["", *sorted(dirnames + filenames)]:
            p = Path(dirpath) / name
            if name in dirnames and not p.is_symlink():
                continue  # listed when walked into
            st = p.lstat()
            what = (
                os.readlink(p)
                if p.is_symlink()
                else hashlib.sha256(p.read_bytes()).hexdigest()
                if p.is_file()
                else "dir"
            )
            digest.update(f"{p.relative_to(root)}\0{st.st_mode}\0{st.st_mtime_ns}\0{what}\n".encode())
    return digest.hexdigest()


def rewrite_sig(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    sig = signature_path(bundle)
    document = json.loads(sig.read_text())
    edit(document)
    sig.write_text(json.dumps(document))


def with_index(bundle: Path, out: Path, index_bytes: bytes) -> Path:
    """A copy of the bundle with its first member (the index) replaced by index_bytes."""
    with open(bundle, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
        data = raw.read()
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data)) as src,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for i, member in enumerate(src.getmembers()):
            if i == 0:
                member.size = len(index_bytes)
                dst.addfile(member, io.BytesIO(index_bytes))
            else:
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    out.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(buf.getvalue()))
    return out


def trust(*keys: Keys, required: bool = False, clock: Clock = CLOCK) -> TrustPolicy:
    return TrustPolicy(tuple(k.public for k in keys), required=required, clock=clock)


# Where each layout keeps the highest accepted sequence per key, out of its tools' sight.
TRUST_STATE = {"hf": ".locks/mirror-trust", "modelscope": ".mirror-trust", "dir": ".mirror/trust"}


def hf_state(cache: Path, keys: Keys) -> Path:
    """The trust state of `keys` in a Hugging Face cache."""
    return cache / TRUST_STATE["hf"] / f"{keys.public.key_id}.json"


# -- keys and signing ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_keygen_cli_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    env = fresh_env(tmp_path / "home")
    prefix = tmp_path / "keys" / "site"
    proc = run_mirror("keygen", "-o", str(prefix), "--json", env=env)
    out = json.loads(proc.stdout)
    private, public = Path(out["private_key"]), Path(out["public_key"])
    assert (private, public) == (tmp_path / "keys" / "site.key", tmp_path / "keys" / "site.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert out["key_id"] == key_id(load_private_key(private).public_key()) == load_public_key(public).key_id
    assert len(out["key_id"]) == 32
    before = private.read_bytes(), public.read_bytes()

    again = run_mirror("keygen", "-o", str(prefix), env=env, check=False)
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr
    assert (private.read_bytes(), public.read_bytes()) == before


@pytest.mark.e2e
def test_export_sign_leaves_the_bundle_byte_identical(
    sample_store: SampleStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = fresh_env(tmp_path / "home")
    store = str(sample_store.store.local_root)
    run_mirror("keygen", "-o", str(tmp_path / "k"), env=env)
    plain, signed = tmp_path / "plain.tar.zst", tmp_path / "signed.tar.zst"
    run_mirror("export", "--store", store, "-o", str(plain), env=env)
    # In process, so the clock the CLI hands to signing is the fake one.
    monkeypatch.setattr("mirror.clock.SYSTEM", CLOCK)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([
            "export", "--store", store, "-o", str(signed), "--sign", str(tmp_path / "k.key"),
            "--sequence", "7", "--expires", "30d", "--json",
        ])  # fmt: skip
    assert done.value.code == 0
    out = capsys.readouterr().out

    assert plain.read_bytes() == signed.read_bytes()
    assert (
        plain.with_name("plain.tar.zst.sha256").read_text().split()[0]
        == (signed.with_name("signed.tar.zst.sha256").read_text().split()[0])
    )
    assert not signature_path(plain).exists()
    statement, _ = read_signature(signature_path(signed))
    index_bytes = read_index_bytes(signed)
    assert statement.index_sha256 == hashlib.sha256(index_bytes).hexdigest()
    assert statement.index_size == len(index_bytes)
    assert statement.sequence == 7
    assert statement.key_id == load_public_key(tmp_path / "k.pub").key_id
    assert statement.expires == NOW + 30 * 86400
    assert json.loads(out)["signature"]["sequence"] == 7

    # Re-exported without --sign: the old signature does not stay beside the new bundle.
    run_mirror("export", "--store", store, "-o", str(signed), env=env)
    assert not signature_path(signed).exists()


def test_default_sequence_is_the_signing_time_and_no_expiry(bundle: Path, keys: Keys) -> None:
    signed = sign_bundle(bundle, keys.private, clock=CLOCK)
    assert signed.statement.sequence == NOW
    assert signed.statement.expires is None
    document = json.loads(signed.path.read_text())
    assert set(document) == {"signature", "statement"}
    assert document["statement"]["expires"] is None
    # The signature is over the canonical statement: sorted keys, no whitespace.
    keys.public.key.verify(base64.b64decode(document["signature"]), signed.statement.canonical())
    assert (
        signed.statement.canonical()
        == json.dumps(document["statement"], sort_keys=True, separators=(",", ":")).encode()
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 12 * 3600), ("90m", 5400), ("3600s", 3600)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30", "0d", "-1d", "1w", "d", "1.5h", ""])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "args",
    [
        ["--sequence", "3"],
        ["--expires", "1d"],
        ["--sign", "{key}", "--expires", "30x"],
        ["--sign", "{pub}"],  # a public key cannot sign
    ],
)
def test_export_sign_usage_errors(
    args: list[str], sample_store: SampleStore, keys: Keys, tmp_path: Path
) -> None:
    out = tmp_path / "x.tar.zst"
    args = [a.format(key=keys.key_file, pub=keys.pub_file) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--store", str(sample_store.store.local_root), "-o", str(out), *args])
    assert exit_info.value.code == 2
    assert not out.exists()


# -- import: accepted ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_import_cli_accepts_a_bundle_signed_by_a_trusted_key(
    bundle: Path, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=5)
    cache = tmp_path / "hub"
    env = fresh_env(tmp_path / "home")
    run_mirror(
        "import", str(bundle), "--target", str(cache),
        "--trust", str(other_keys.pub_file), "--trust", str(keys.pub_file), env=env,
    )  # fmt: skip
    state = cache / ".locks" / "mirror-trust" / f"{keys.public.key_id}.json"
    assert json.loads(state.read_text())["sequence"] == 5
    info = scan_cache_dir(cache)
    assert not info.warnings, info.warnings
    assert {r.repo_id for r in info.repos} == {"org/tiny", "gpt2", "org/data"}

    # The same sequence again (a re-import) is accepted; the remembered sequence stays as it was.
    before = tree_hash(state.parent)
    run_mirror("import", str(bundle), "--target", str(cache), "--trust", str(keys.pub_file), env=env)
    assert tree_hash(state.parent) == before


def test_newer_sequence_is_accepted_and_remembered(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=5)
    import_bundle(bundle, "hf", cache, trust=trust(keys))
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=9)
    import_bundle(bundle, "hf", cache, trust=trust(keys))
    assert accepted(hf_state(cache, keys)) == 9


@pytest.mark.parametrize(("layout", "where"), sorted(TRUST_STATE.items()))
def test_where_each_layout_remembers_the_sequence(
    sample_store: SampleStore, keys: Keys, tmp_path: Path, layout: str, where: str
) -> None:
    # The modelscope layout cannot hold a short id like gpt2: export org/data and org/tiny only.
    selection = [s for s in select_all(sample_store.store) if "/" in s.key.repo_id]
    bundle = write_bundle(sample_store.store, selection, tmp_path / "b.tar.zst").path
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=3)
    target = tmp_path / layout
    import_bundle(bundle, layout, target, trust=trust(keys))
    state = target / where / f"{keys.public.key_id}.json"
    assert accepted(state) == 3
    assert json.loads(state.read_text())["accepted"] == iso(NOW)
    if layout == "modelscope":
        from modelscope_hub._cache_manager import scan_cache

        assert {r.repo_id for r in scan_cache(target).repos} == {"org/tiny", "org/data"}


def test_unsigned_bundle_passes_when_nothing_is_required(
    sample_store: SampleStore, bundle: Path, tmp_path: Path
) -> None:
    main_commit = sample_store.tiny.commits["main"]
    for target, trust_policy in ((tmp_path / "hub", TrustPolicy(clock=CLOCK)), (tmp_path / "hub2", None)):
        report = import_bundle(bundle, "hf", target, trust=trust_policy)
        assert report.exit_code == 0
        assert (target / "models--org--tiny" / "refs" / "main").read_text() == main_commit
        assert not trust_dir("hf", target).exists()  # no signature: no sequence to remember


# -- import: rejected -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Path, Path, Keys, Keys], Path]  # (signed bundle, scratch, keys, other keys) -> bundle
    message: str


def _flip_signature(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    def edit(d: dict[str, Any]) -> None:
        raw = bytearray(base64.b64decode(d["signature"]))
        raw[10] ^= 0x01
        d["signature"] = base64.b64encode(bytes(raw)).decode()

    rewrite_sig(b, edit)
    return b


def _bump_statement(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    rewrite_sig(b, lambda d: d["statement"].update(sequence=10**6))
    return b


def _other_bundle(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    """The .sig of one bundle beside another (different index) bundle."""
    other = scratch / "other.tar.zst"
    other.write_bytes((b.parent / "subset.tar.zst").read_bytes())
    signature_path(other).write_bytes(signature_path(b).read_bytes())
    return other


def _reformatted_index(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    """The same index content, other bytes: still a valid bundle, but not the signed index."""
    data = json.loads(read_index_bytes(b))
    out = with_index(b, scratch / "reformatted.tar.zst", (json.dumps(data, indent=2) + "\n").encode())
    signature_path(out).write_bytes(signature_path(b).read_bytes())
    assert read_index(out) == read_index(b)
    return out


def _untrusted_key(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    sign_bundle(b, o.private, clock=CLOCK, sequence=500)
    return b


def _older_sequence(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    sign_bundle(b, k.private, clock=CLOCK, sequence=99)
    return b


def _expired(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    sign_bundle(b, k.private, clock=CLOCK, sequence=200, expires=NOW - 1)
    return b


def _unsigned(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    signature_path(b).unlink()
    return b


def _malformed(b: Path, scratch: Path, k: Keys, o: Keys) -> Path:
    rewrite_sig(b, lambda d: d["statement"].update(comment="hello"))
    return b


CASES = [
    Case("signature bytes altered", _flip_signature, "does not verify with trusted key"),
    Case("statement altered", _bump_statement, "does not verify with trusted key"),
    Case("signature of another bundle", _other_bundle, "is not the one"),
    Case("index bytes changed", _reformatted_index, "is not the one"),
    Case("key not trusted", _untrusted_key, "which is not trusted"),
    Case("older sequence", _older_sequence, "sequence 99 is older than sequence 100"),
    Case("expired", _expired, "the signature expired at"),
    Case("unsigned", _unsigned, "is not signed"),
    Case("malformed", _malformed, "malformed signature file"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rejected_with_the_target_untouched(
    case: Case, sample_store: SampleStore, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = export(sample_store, out / "first.tar.zst", count=1)
    sign_bundle(first, keys.private, clock=CLOCK, sequence=100)
    cache = tmp_path / "hub"
    import_bundle(first, "hf", cache, trust=trust(keys))  # the target holds a repo and sequence 100
    bundle = export(sample_store, out / "b.tar.zst")
    export(sample_store, out / "subset.tar.zst", count=2)
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=100)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    victim = case.prepare(bundle, scratch, keys, other_keys)
    before = tree_hash(tmp_path / "hub"), tree_hash(tmp_path / "home")

    with pytest.raises(IntegrityError) as error:
        import_bundle(victim, "hf", cache, trust=trust(keys))
    assert case.message in str(error.value)
    assert (tree_hash(tmp_path / "hub"), tree_hash(tmp_path / "home")) == before
    assert accepted(hf_state(cache, keys)) == 100


@pytest.mark.e2e
def test_cli_rejections_exit_4_and_unsigned_under_require_signature(
    bundle: Path, keys: Keys, other_keys: Keys, tmp_path: Path
) -> None:
    cache = tmp_path / "hub"
    env = fresh_env(tmp_path / "home")
    signed = bundle.with_name("signed.tar.zst")
    signed.write_bytes(bundle.read_bytes())
    sign_bundle(signed, keys.private, clock=CLOCK, sequence=1)
    run_mirror("import", str(signed), "--target", str(cache), "--trust", str(keys.pub_file), env=env)
    before = tree_hash(cache)

    def rejected(*args: str, code: int, message: str, **extra: str) -> None:
        proc = run_mirror(
            "import", str(bundle), "--target", str(cache), *args, env={**env, **extra}, check=False
        )
        assert proc.returncode == code, proc.stderr
        assert message in proc.stderr
        assert tree_hash(cache) == before

    rejected("--trust", str(keys.pub_file), code=4, message="is not signed")
    rejected("--require-signature", "--trust", str(keys.pub_file), code=4, message="is not signed")
    rejected("--trust", str(keys.pub_file), code=4, message="is not signed", MIRROR_REQUIRE_SIGNATURE="1")
    # Required without a trusted key: refused before any bundle is read.
    rejected("--require-signature", code=2, message="no key is trusted")
    rejected(code=2, message="no key is trusted", MIRROR_REQUIRE_SIGNATURE="1")
    sign_bundle(bundle, other_keys.private, clock=CLOCK, sequence=2)
    rejected("--trust", str(keys.pub_file), code=4, message="which is not trusted")
    # Without --trust or the requirement, a signature is not checked and the import proceeds.
    run_mirror("import", str(bundle), "--target", str(cache), env=env)


def test_sequence_is_not_remembered_when_the_import_fails(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=1)
    import_bundle(bundle, "hf", cache, trust=trust(keys))
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=2)
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size * 2 // 3])  # the index is still whole
    signature_path(cut).write_bytes(signature_path(bundle).read_bytes())
    with pytest.raises(IntegrityError, match=r"truncated|corrupt"):
        import_bundle(cut, "hf", cache, trust=trust(keys))
    assert accepted(hf_state(cache, keys)) == 1


def test_sequence_is_not_remembered_when_nothing_was_published(
    bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    """A damaged file rejects the whole bundle (issue 5 item 2): nothing is published, no sequence kept."""
    with open(bundle, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
        data = bytearray(raw.read())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        victim = next(m for m in tar.getmembers() if m.name.endswith("train.csv"))
    data[victim.offset_data] ^= 0xFF
    damaged = tmp_path / "damaged.tar.zst"
    damaged.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(bytes(data)))
    sign_bundle(damaged, keys.private, clock=CLOCK, sequence=4)
    with pytest.raises(BundleImportError):
        import_bundle(damaged, "hf", tmp_path / "hub", trust=trust(keys))
    assert accepted(hf_state(tmp_path / "hub", keys)) is None


def test_check_binds_the_signed_index_to_the_one_the_import_streams(
    bundle: Path, keys: Keys, sample_store: SampleStore, tmp_path: Path
) -> None:
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=1)
    subset = export(sample_store, tmp_path / "subset.tar.zst", count=1)
    state, target = FolderSequences(tmp_path / "hub" / TRUST_STATE["hf"]), tmp_path / "hub"
    # The index bytes the import streams against must be the signed ones ...
    with pytest.raises(IntegrityError, match="is not the one"):
        check_trust(trust(keys), bundle, read_index_bytes(subset), state=state, target=target)
    signed = read_index_bytes(bundle)
    assert check_trust(trust(keys), bundle, signed, state=state, target=target) is not None
    # ... and the engine hands the trust check the bytes of the very index it streams against.
    other: BundleIndex = read_index(subset)
    with pytest.raises(IntegrityError, match="is not the one"):
        import_unit(
            ImportUnit((Volume(bundle, other, read_index_bytes(subset)),)), "hf", target, trust=trust(keys)
        )
    assert not target.exists() or not any(target.iterdir())


def test_expiry_is_checked_against_the_clock(bundle: Path, keys: Keys, tmp_path: Path) -> None:
    expires = NOW + 3600
    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=1, expires=expires)
    data = read_index_bytes(bundle)

    def check(now: int) -> object:
        policy = trust(keys, clock=Clock(time=lambda: float(now)))
        return check_trust(policy, bundle, data, state=FolderSequences(tmp_path / "trust"), target=tmp_path)

    assert check(expires - 1) is not None
    with pytest.raises(IntegrityError, match=r"expired at .* \(now " + iso(expires)):
        check(expires)


@pytest.mark.parametrize("kind", sorted(TRUST_STATE))
def test_each_trust_state_folder_keeps_its_own_sequence(
    kind: str, bundle: Path, keys: Keys, tmp_path: Path
) -> None:
    """check_trust knows no layouts: each state folder it is given remembers its own sequences."""
    target = tmp_path / "target"
    folders = {k: target / where for k, where in TRUST_STATE.items()}
    data = read_index_bytes(bundle)

    def check(folder: Path, clock: Clock = CLOCK) -> object:
        return check_trust(
            trust(keys, clock=clock), bundle, data, state=FolderSequences(folder), target=target
        )

    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=9)
    acceptance = check(folders[kind], Clock(time=lambda: float(NOW + 5)))
    assert acceptance is not None
    acceptance.record()
    state = folders[kind] / f"{keys.public.key_id}.json"
    assert accepted(state) == 9
    assert json.loads(state.read_text())["accepted"] == iso(NOW + 5)  # the clock's time, not the wall's

    sign_bundle(bundle, keys.private, clock=CLOCK, sequence=5)
    with pytest.raises(IntegrityError, match=f"sequence 5 is older than sequence 9 .* into {target}"):
        check(folders[kind])
    for other, folder in folders.items():
        if other != kind:
            assert check(folder) is not None  # a folder of another kind has accepted nothing yet
            assert accepted(folder / f"{keys.public.key_id}.json") is None


def test_export_signs_at_the_clocks_time(sample_store: SampleStore, keys: Keys, tmp_path: Path) -> None:
    """The default sequence and the expiry come from the Signer's clock."""
    signer = Signer(keys.private, lifetime=3600, clock=CLOCK)
    result = export_bundles(sample_store.store, None, tmp_path / "b.tar.zst", signer=signer)
    (exported,) = result.bundles
    assert exported.signature is not None
    statement, _ = read_signature(exported.signature.path)
    assert (statement.sequence, statement.expires) == (NOW, NOW + 3600)
    assert statement == exported.signature.statement


def test_export_cli_passes_source_date_epoch_as_the_creation_time(
    sample_store: SampleStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI reads SOURCE_DATE_EPOCH and hands it to export; unset or empty, the newest sync counts."""
    store = str(sample_store.store.local_root)

    def created(name: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(["export", "--store", store, "-o", str(tmp_path / name), "-q"])
        assert done.value.code == 0
        return read_index(tmp_path / name).created

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert created("a.tar.zst") == iso(1_700_000_000)
    newest_sync = read_index(export(sample_store, tmp_path / "plain.tar.zst")).created
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "")
    assert created("b.tar.zst") == newest_sync != iso(1_700_000_000)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert created("c.tar.zst") == newest_sync
    # The library takes the creation time as a value and never reads the environment itself.
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert export_bundles(sample_store.store, None, tmp_path / "d.tar.zst").index.created == newest_sync
    given = export_bundles(sample_store.store, None, tmp_path / "e.tar.zst", created=1_700_000_100)
    assert given.index.created == iso(1_700_000_100)


def test_required_signature_needs_a_trusted_key() -> None:
    with pytest.raises(UsageError):
        TrustPolicy(required=True, clock=CLOCK)
