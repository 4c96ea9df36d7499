"""The signed statement and its detached `OUT.tar.zst.sig`: what a signature says, how it is written and read.

The bundle itself never changes (reproducible bundles are a contract): the signature is a separate file,

    OUT.tar.zst.sig   {"signature": "<base64 Ed25519 signature>", "statement": {...}}

whose statement pins the exact bytes of the bundle's `MIRROR-BUNDLE.json` (which pins every file's sha256
and size), names the key, and carries a sequence number and an optional expiry. The signature is over the
statement's canonical JSON (sorted keys, no spaces, ASCII). Whether an import accepts it is `trust`'s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mirror.bounded import SIGNATURE, parse_json
from mirror.bundle import MAX_INDEX_SIZE, location, open_bundle
from mirror.clock import Clock, iso, parse_iso
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.paths import is_sha256
from mirror.signing.keys import KEY_ID_LENGTH, key_id

SIG_FORMAT = "mirror-bundle-signature"
SIG_VERSION = 1
SIG_SUFFIX = ".sig"
MAX_SEQUENCE = (1 << 63) - 1
_KEY_ID = re.compile(rf"^[0-9a-f]{{{KEY_ID_LENGTH}}}$")
_STATEMENT_KEYS = {"format", "format_version", "key_id", "index_sha256", "index_size", "sequence", "expires"}


@dataclass(frozen=True)
class Statement:
    """What a signature says: this key vouches for the index with these bytes, at this sequence, until then."""

    key_id: str
    index_sha256: str
    index_size: int
    sequence: int
    expires: int | None = None  # unix seconds, UTC

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SIG_FORMAT,
            "format_version": SIG_VERSION,
            "key_id": self.key_id,
            "index_sha256": self.index_sha256,
            "index_size": self.index_size,
            "sequence": self.sequence,
            "expires": None if self.expires is None else iso(self.expires),
        }

    def canonical(self) -> bytes:
        """The bytes that are signed: canonical JSON (sorted keys, no whitespace, ASCII only)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @classmethod
    def from_json(cls, data: Any) -> Statement:
        """Strict: exactly the known keys with their types, so the canonical form is unique."""
        if not isinstance(data, dict) or set(data) != _STATEMENT_KEYS:
            raise ValueError(f"the statement must hold exactly {sorted(_STATEMENT_KEYS)}")
        if data["format"] != SIG_FORMAT:
            raise ValueError(f"not a {SIG_FORMAT}")
        if data["format_version"] != SIG_VERSION or isinstance(data["format_version"], bool):
            raise ValueError(
                f"signature format version {data['format_version']!r} is not supported (this mirror reads "
                f"{SIG_VERSION}); upgrade mirror on this machine"
            )
        kid, digest, size, sequence, expires = (
            data["key_id"],
            data["index_sha256"],
            data["index_size"],
            data["sequence"],
            data["expires"],
        )
        if not isinstance(kid, str) or not _KEY_ID.match(kid):
            raise ValueError(f"invalid key id {kid!r}")
        if not isinstance(digest, str) or not is_sha256(digest):
            raise ValueError(f"invalid index_sha256 {digest!r}")
        if not is_int(size) or not 0 < size <= MAX_INDEX_SIZE:
            raise ValueError(f"invalid index_size {size!r}")
        if not is_int(sequence) or not 0 <= sequence <= MAX_SEQUENCE:
            raise ValueError(f"invalid sequence {sequence!r}")
        expiry = None
        if expires is not None:
            expiry = parse_iso(expires) if isinstance(expires, str) else None
            if expiry is None:
                raise ValueError(f"invalid expiry {expires!r}")
        return cls(kid, digest, size, sequence, expiry)


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON's true is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def signature_path(bundle: location.BundlePath) -> location.BundlePath:
    """OUT.tar.zst.sig beside OUT.tar.zst."""
    return bundle.with_name(bundle.name + SIG_SUFFIX)


def read_index_bytes(bundle: location.BundlePath) -> bytes:
    """The exact bytes of the bundle's first member, `MIRROR-BUNDLE.json`, read by the bundle's own guarded
    reader (only the first member, at most MAX_INDEX_SIZE, validated as an index)."""
    with open_bundle(bundle) as reader:
        return reader.index_bytes


@dataclass(frozen=True)
class Signed:
    """What `sign_bundle` wrote."""

    path: location.BundlePath
    statement: Statement

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.statement.to_json()}

    def describe(self) -> str:
        s = self.statement
        expiry = f"expires {iso(s.expires)}" if s.expires is not None else "no expiry"
        return f"key {s.key_id}, sequence {s.sequence}, {expiry}"


def sign_bundle(
    bundle: location.BundlePath,
    key: Ed25519PrivateKey,
    *,
    clock: Clock,
    index_bytes: bytes | None = None,
    sequence: int | None = None,
    expires: int | None = None,
) -> Signed:
    """Write BUNDLE.sig: a statement over the bundle's index bytes, signed with `key`.

    `index_bytes` is the index as the writer wrote it (export passes `BundleSummary.index_bytes`: a valid
    index, the writer writes no other); without it, it is read from the bundle (and validated as it is read).

    `sequence` defaults to the signing time by `clock`, in unix seconds: it grows with every export and needs
    no state on the connected side. `expires` is absolute (unix seconds).
    """
    data = read_index_bytes(bundle) if index_bytes is None else index_bytes
    statement = Statement(
        key_id=key_id(key.public_key()),
        index_sha256=hashlib.sha256(data).hexdigest(),
        index_size=len(data),
        sequence=int(clock.time()) if sequence is None else sequence,
        expires=expires,
    )
    if not 0 <= statement.sequence <= MAX_SEQUENCE:
        raise UsageError(f"invalid sequence {statement.sequence} (want 0 to {MAX_SEQUENCE})")
    signature = key.sign(statement.canonical())
    document = {"signature": base64.b64encode(signature).decode("ascii"), "statement": statement.to_json()}
    path = signature_path(bundle)
    try:
        location.write_side(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())
    except OSError as e:
        raise MirrorError(f"writing the signature {path} failed: {e}") from e
    return Signed(path, statement)


def read_signature(path: location.BundlePath) -> tuple[Statement, bytes]:
    """The statement and the raw signature of a `.sig` file (IntegrityError if malformed)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears twice")
        return dict(pairs)

    raw = location.read_side(path, SIGNATURE, IntegrityError)
    if raw is None:
        raise IntegrityError(f"{path}: cannot read the signature: it is not there")
    try:
        parse_json(raw, SIGNATURE)  # bounded depth before the duplicate-refusing parse
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
        if not isinstance(document, dict) or set(document) != {"signature", "statement"}:
            raise ValueError('want an object with exactly "signature" and "statement"')
        if not isinstance(document["signature"], str):
            raise ValueError("the signature is not a string")
        signature = base64.b64decode(document["signature"], validate=True)
        if len(signature) != 64:
            raise ValueError(f"an Ed25519 signature has 64 bytes, this one {len(signature)}")
        statement = Statement.from_json(document["statement"])
    except (UnicodeDecodeError, binascii.Error, ValueError) as e:
        raise IntegrityError(f"{path}: malformed signature file ({e}); copy it again or re-export") from None
    return statement, signature


__all__ = [
    "MAX_SEQUENCE",
    "Signed",
    "Statement",
    "is_int",
    "read_index_bytes",
    "read_signature",
    "sign_bundle",
    "signature_path",
]
