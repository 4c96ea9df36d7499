"""The importer's trust: which keys it accepts, the check of a bundle's `.sig` before anything is written,
and the highest sequence accepted per key, remembered so an older bundle is refused (rollback).

That sequence is kept per key in the target's trust state (`SequenceState`), one JSON record per key id,
whose format this module owns; where it is, out of its tools' sight, is the layout's choice: a folder of
`<key id>.json` files (`FolderSequences`), or a store's own storage. The clock the policy carries judges
expiry and stamps what was accepted.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidSignature

from mirror.bounded import RECORD, parse_json, read_bounded
from mirror.bundle import location
from mirror.clock import Clock, iso
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.fsutil import atomic_write_json
from mirror.signing.keys import TrustedKey
from mirror.signing.statement import Statement, is_int, read_signature, signature_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrustPolicy:
    """Which keys an import trusts. With any key, or `required`, every bundle must carry a valid signature.

    `clock` tells the time a signature's expiry is judged against and an acceptance is recorded at.
    """

    keys: tuple[TrustedKey, ...] = ()
    required: bool = False
    clock: Clock = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.required and not self.keys:
            raise UsageError(
                "a signature is required (--require-signature or MIRROR_REQUIRE_SIGNATURE) but no key is "
                "trusted; give --trust PUBKEY"
            )

    @property
    def active(self) -> bool:
        return bool(self.keys) or self.required


class SequenceState(Protocol):
    """Where a target keeps its trust state: one record per key id, of the highest sequence accepted from
    that key (this module writes and reads the records; the state only keeps them)."""

    def where(self, key_id: str) -> str:
        """The key's record, for messages: its path, or its s3:// URL (never a credential)."""
        ...

    def read(self, key_id: str) -> Any:
        """The key's record (parsed JSON), None when absent; IntegrityError or ValueError when unreadable."""
        ...

    def update(self, key_id: str, change: Callable[[Any], Any]) -> None:
        """Write `change(the record as read)` in its place (None: write nothing), atomically and never over
        a record another writer changed meanwhile: then read it again and apply `change` again."""
        ...


class FolderSequences:
    """The trust state in a folder: `<key id>.json`, each replaced atomically under a lock of the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, key_id: str) -> Path:
        return self.folder / f"{key_id}.json"

    def where(self, key_id: str) -> str:
        return str(self._path(key_id))

    def read(self, key_id: str) -> Any:
        raw = read_bounded(self._path(key_id), RECORD, IntegrityError, missing_ok=True)
        return None if raw is None else parse_json(raw, RECORD)

    def update(self, key_id: str, change: Callable[[Any], Any]) -> None:
        with _locked(self.folder):
            new = change(self.read(key_id))
            if new is not None:
                atomic_write_json(self._path(key_id), new)


@dataclass(frozen=True)
class Acceptance:
    """A bundle's signature passed; `record` remembers its sequence once the import has published it."""

    bundle: location.BundlePath
    statement: Statement
    state: SequenceState
    clock: Clock

    def record(self) -> None:
        """Raise the key's remembered sequence to this one, never lowering it: a higher one another writer
        recorded meanwhile is kept."""
        statement, state = self.statement, self.state
        accepted = {
            "key_id": statement.key_id,
            "sequence": statement.sequence,
            "index_sha256": statement.index_sha256,
            "bundle": self.bundle.name,
            "accepted": iso(self.clock.time()),
        }

        def raised(record: Any) -> Any:
            current = _sequence(record, state, statement.key_id)
            return None if current is not None and current >= statement.sequence else accepted

        try:
            with _reading(state, statement.key_id):
                state.update(statement.key_id, raised)
        except OSError as e:
            raise MirrorError(
                f"recording the accepted sequence in {state.where(statement.key_id)} failed: {e}"
            ) from e


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def _reading(state: SequenceState, key_id: str) -> Iterator[None]:
    """A record that cannot be read, named, with what to do about it."""
    try:
        yield
    except (IntegrityError, ValueError) as e:
        raise MirrorError(
            f"the trust state {state.where(key_id)} is unreadable ({e}); restore it, or remove it to forget "
            "which sequence was accepted from that key"
        ) from None


def _sequence(record: Any, state: SequenceState, key_id: str) -> int | None:
    if record is None:
        return None
    sequence = record.get("sequence") if isinstance(record, dict) else None
    if not is_int(sequence):
        raise MirrorError(f"the trust state {state.where(key_id)} holds no sequence; restore or remove it")
    return cast(int, sequence)


def read_sequence(state: SequenceState, key_id: str) -> int | None:
    """The highest sequence accepted so far from the key (None: nothing yet)."""
    with _reading(state, key_id):
        record = state.read(key_id)
    return _sequence(record, state, key_id)


def check_trust(
    policy: TrustPolicy | None,
    bundle: location.BundlePath,
    index_bytes: bytes,
    *,
    state: SequenceState,
    target: Path | str,
) -> Acceptance | None:
    """Refuse (IntegrityError), before anything is written, a bundle the policy does not accept.

    `index_bytes` are the bytes of the bundle's index that the import streams against (the caller read and
    parsed them): they must be the signed ones, so the import's own verification then pins every file to
    what was signed. `state` is the target's trust state (the layout's `sequences`); `target` names the
    target in messages. None when no policy applies.
    """
    sig = signature_path(bundle)
    if policy is None or not policy.active:
        if location.exists(sig):
            log.info("%s not checked: no --trust key given", sig.name)
        return None
    if not location.exists(sig):
        raise IntegrityError(
            f"{bundle.name} is not signed (no {sig.name} beside it) and a signature is required "
            "(--trust/--require-signature); bring the .sig with the bundle, or export it with --sign"
        )
    statement, signature = read_signature(sig)
    trusted = {k.key_id: k for k in policy.keys}
    key = trusted.get(statement.key_id)
    if key is None:
        raise IntegrityError(
            f"{sig.name} is signed by key {statement.key_id}, which is not trusted "
            f"(trusted: {', '.join(sorted(trusted))}); pass its public key with --trust if it is yours"
        )
    try:
        key.key.verify(signature, statement.canonical())
    except InvalidSignature:
        raise IntegrityError(
            f"{sig.name}: the signature does not verify with trusted key {key.key_id} ({key.path}); "
            "the signature or its statement was altered"
        ) from None
    digest = hashlib.sha256(index_bytes).hexdigest()
    if digest != statement.index_sha256 or len(index_bytes) != statement.index_size:
        raise IntegrityError(
            f"{bundle.name}: its index (sha256 {digest}, {len(index_bytes)} bytes) is not the one {sig.name} "
            f"signs (sha256 {statement.index_sha256}, {statement.index_size} bytes); the bundle was altered "
            "or the .sig belongs to another bundle"
        )
    now = policy.clock.time()
    if statement.expires is not None and now >= statement.expires:
        raise IntegrityError(
            f"{sig.name}: the signature expired at {iso(statement.expires)} (now {iso(now)}); "
            "export and sign a fresh bundle (or check this machine's clock)"
        )
    accepted = read_sequence(state, statement.key_id)
    if accepted is not None and statement.sequence < accepted:
        raise IntegrityError(
            f"{sig.name}: sequence {statement.sequence} is older than sequence {accepted} already accepted "
            f"from key {statement.key_id} into {target} (rollback refused; recorded in "
            f"{state.where(statement.key_id)}); import a newer bundle"
        )
    return Acceptance(bundle, statement, state, policy.clock)


__all__ = ["Acceptance", "FolderSequences", "SequenceState", "TrustPolicy", "check_trust", "read_sequence"]
