"""The importer's trust: which keys it accepts, the check of a bundle's `.sig` before anything is written,
and the highest sequence accepted per key, remembered so an older bundle is refused (rollback).

That sequence is kept per key in a trust-state folder of the target, one JSON file per key id; where that
folder is, out of its tools' sight, is the layout's choice (the engine passes it as `state_dir`). The
clock the policy carries judges expiry and stamps what was accepted.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

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


@dataclass(frozen=True)
class Acceptance:
    """A bundle's signature passed; `record` remembers its sequence once the import has published it."""

    bundle: location.BundlePath
    statement: Statement
    state: Path
    clock: Clock

    def record(self) -> None:
        """Raise the key's remembered sequence to this one (never lower it), atomically, under a lock."""
        try:
            with _locked(self.state.parent):
                current = read_sequence(self.state)
                if current is not None and current >= self.statement.sequence:
                    return
                atomic_write_json(
                    self.state,
                    {
                        "key_id": self.statement.key_id,
                        "sequence": self.statement.sequence,
                        "index_sha256": self.statement.index_sha256,
                        "bundle": self.bundle.name,
                        "accepted": iso(self.clock.time()),
                    },
                )
        except OSError as e:
            raise MirrorError(f"recording the accepted sequence in {self.state} failed: {e}") from e


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_sequence(state: Path) -> int | None:
    """The highest sequence accepted so far (None: nothing yet)."""
    try:
        raw = read_bounded(state, RECORD, MirrorError, missing_ok=True)
        if raw is None:
            return None
        data = parse_json(raw, RECORD)
    except (MirrorError, ValueError) as e:
        raise MirrorError(
            f"the trust state {state} is unreadable ({e}); restore it, or remove it to forget which sequence "
            "was accepted from that key"
        ) from None
    sequence = data.get("sequence") if isinstance(data, dict) else None
    if not is_int(sequence):
        raise MirrorError(f"the trust state {state} holds no sequence; restore or remove it")
    return cast(int, sequence)


def check_trust(
    policy: TrustPolicy | None,
    bundle: location.BundlePath,
    index_bytes: bytes,
    *,
    state_dir: Path,
    target: Path,
) -> Acceptance | None:
    """Refuse (IntegrityError), before anything is written, a bundle the policy does not accept.

    `index_bytes` are the bytes of the bundle's index that the import streams against (the caller read and
    parsed them): they must be the signed ones, so the import's own verification then pins every file to
    what was signed. `state_dir` is the target's trust-state folder (one `<key id>.json` per key); `target`
    names the target in messages. None when no policy applies.
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
    state = Path(state_dir) / f"{statement.key_id}.json"
    accepted = read_sequence(state)
    if accepted is not None and statement.sequence < accepted:
        raise IntegrityError(
            f"{sig.name}: sequence {statement.sequence} is older than sequence {accepted} already accepted "
            f"from key {statement.key_id} into {target} (rollback refused; recorded in {state}); import a "
            "newer bundle"
        )
    return Acceptance(bundle, statement, state, policy.clock)


__all__ = ["Acceptance", "TrustPolicy", "check_trust", "read_sequence"]
