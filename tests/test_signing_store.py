"""Signed bundles imported into a store: the sequences accepted per key are kept in the store itself
(`trust/<key id>.json`), so every host importing into one bucket refuses a bundle older than one any of
them accepted, and raising a sequence never lowers one another writer recorded meanwhile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.clock import Clock, iso
from mirror.errors import MirrorError
from mirror.exits import ExitCode
from mirror.layouts import make_layout
from mirror.layouts.store import StoreSequences
from mirror.signing import Acceptance, SequenceState, Statement, read_sequence
from mirror.store import Store
from tests.conftest import SampleStore
from tests.s3server import S3Bucket
from tests.test_store_storage import _Interleaved, run_cli

NOW = 1_900_000_000
CLOCK = Clock(time=lambda: float(NOW))
KEY_ID = "0123456789abcdef0123456789abcdef"


def test_hosts_importing_into_one_bucket_share_the_sequences_accepted(
    sample_store: SampleStore,
    s3: S3Bucket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Host A imports sequence 5 into the bucket; host B (another home, so another local work folder) is
    then refused sequence 4, as a local rollback is (exit 4), and accepts sequence 6."""
    assert run_cli(["keygen", "-o", str(tmp_path / "k")], capsys)[0] == 0
    store = str(sample_store.store.local_root)
    bundles: dict[int, Path] = {}
    for sequence in (4, 5, 6):
        bundles[sequence] = bundle = tmp_path / f"seq{sequence}.tar.zst"
        signing = ["--sign", str(tmp_path / "k.key"), "--sequence", str(sequence)]
        assert run_cli(["export", "--store", store, "-o", str(bundle), *signing], capsys)[0] == 0
    kid = json.loads(Path(f"{bundles[5]}.sig").read_text())["statement"]["key_id"]
    url = s3.url("far/store")

    def import_on(host: str, sequence: int) -> tuple[int, str]:
        monkeypatch.setenv("HOME", str(tmp_path / host))
        args = ["import", str(bundles[sequence]), "--layout", "store", "--target", url]
        return run_cli([*args, "--trust", str(tmp_path / "k.pub")], capsys)

    code, out = import_on("host-a", 5)
    assert code == 0, out
    recorded = json.loads(s3.read(f"far/store/trust/{kid}.json"))
    assert (recorded["key_id"], recorded["sequence"], recorded["bundle"]) == (kid, 5, "seq5.tar.zst")

    code, out = import_on("host-b", 4)
    assert code == ExitCode.INTEGRITY, out  # as a local rollback refusal
    assert "sequence 4 is older than sequence 5" in out and f"{url}/trust/{kid}.json" in out
    assert json.loads(s3.read(f"far/store/trust/{kid}.json"))["sequence"] == 5

    code, out = import_on("host-b", 6)
    assert code == 0, out
    assert json.loads(s3.read(f"far/store/trust/{kid}.json"))["sequence"] == 6
    code, out = import_on("host-a", 5)
    assert code == ExitCode.INTEGRITY and "sequence 5 is older than sequence 6" in out
    kept = [p for host in ("host-a", "host-b") for p in (tmp_path / host).rglob("*") if "trust" in p.name]
    assert not kept  # nothing of the trust state is left on either host


def test_the_sequence_state_of_a_store_is_its_trust_objects(s3: S3Bucket, tmp_path: Path) -> None:
    """The store layout's state reads and writes `trust/<key id>.json` of the store (a folder's file or a
    bucket's object), named in messages by its path or its s3:// URL."""
    url = s3.url("far")
    local = tmp_path / "store" / "trust" / f"{KEY_ID}.json"
    for target, where in ((url, f"{url}/trust/{KEY_ID}.json"), (tmp_path / "store", str(local))):
        sequences = make_layout("store", target).sequences
        assert isinstance(sequences, StoreSequences)
        assert sequences.where(KEY_ID) == where
        assert read_sequence(sequences, KEY_ID) is None
        acceptance(sequences, 3).record()
        assert read_sequence(sequences, KEY_ID) == 3
    assert s3.read(f"far/trust/{KEY_ID}.json") == local.read_bytes()  # one format, wherever it is kept
    assert json.loads(local.read_bytes()) == {
        "accepted": iso(NOW),
        "bundle": "b.tar.zst",
        "index_sha256": "a" * 64,
        "key_id": KEY_ID,
        "sequence": 3,
    }


def acceptance(state: SequenceState, sequence: int) -> Acceptance:
    statement = Statement(key_id=KEY_ID, index_sha256="a" * 64, index_size=10, sequence=sequence)
    return Acceptance(Path("b.tar.zst"), statement, state, CLOCK)


@pytest.mark.parametrize(("theirs", "kept"), [(9, 9), (3, 5)])
def test_raising_a_sequence_over_a_stale_tag_reads_again_and_never_lowers(
    storage_store: Store, theirs: int, kept: int
) -> None:
    """Another importer raises the key's record between this one's read and its write: the write finds
    the tag stale, reads again, and writes only if its sequence is still the higher (9 stays 9; 3 becomes 5)."""
    sequences = StoreSequences(storage_store)
    acceptance(sequences, 2).record()
    other = StoreSequences(Store(storage_store.storage, clock=CLOCK))
    racing = _Interleaved(
        storage_store.storage, Store.trust_key(KEY_ID), lambda: acceptance(other, theirs).record()
    )
    acceptance(StoreSequences(Store(racing, clock=CLOCK)), 5).record()  # type: ignore[arg-type]
    assert racing.attempts == (2 if kept == 5 else 1)  # a lower one read again is overwritten; a higher kept
    assert read_sequence(sequences, KEY_ID) == kept


def test_an_unreadable_trust_object_is_named_with_what_to_do(s3: S3Bucket) -> None:
    url = s3.url("far")
    s3.server.client().put_object(Bucket=s3.name, Key=f"far/trust/{KEY_ID}.json", Body=b"{not json")
    sequences = make_layout("store", url).sequences
    unreadable = f"the trust state {url}/trust/{KEY_ID}.json is unreadable"
    with pytest.raises(MirrorError, match=unreadable):
        read_sequence(sequences, KEY_ID)
    with pytest.raises(MirrorError, match=unreadable):  # nor is it overwritten
        acceptance(sequences, 4).record()
    assert s3.read(f"far/trust/{KEY_ID}.json") == b"{not json"
