"""Signed bundles: Ed25519 keys, the detached `OUT.tar.zst.sig` over a bundle's index, and the import's trust check.

The bundle itself never changes (reproducible bundles are a contract): the signature is a separate file,

    OUT.tar.zst.sig   {"signature": "<base64 Ed25519 signature>", "statement": {...}}

whose statement pins the exact bytes of the bundle's `MIRROR-BUNDLE.json` (which pins every file's sha256
and size), names the key, and carries a sequence number and an optional expiry. The signature is over the
statement's canonical JSON (sorted keys, no spaces, ASCII). On import, a trust policy checks, before
anything is written: the signature verifies with a trusted key, the statement is for this bundle's index,
it has not expired, and its sequence is not older than the highest one already accepted from that key into
the target. That sequence is remembered per key and target where the layout's own tools never look:

    hf          <cache>/.locks/mirror-trust/<key id>.json   (scan_cache_dir skips .locks)
    modelscope  <cache>/.mirror-trust/<key id>.json         (a folder of files, never an <owner>/<name> repo)
    dir         <target>/.mirror/trust/<key id>.json
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mirror.bounded import INDEX, KEY, RECORD, SIGNATURE, parse_json, read_bounded
from mirror.bundle import MAX_INDEX_SIZE, BundleIndex, open_bundle
from mirror.clock import iso, parse_iso
from mirror.errors import IntegrityError, MirrorError, UsageError
from mirror.fsutil import atomic_write_bytes, atomic_write_json

log = logging.getLogger("mirror")

SIG_FORMAT = "mirror-bundle-signature"
SIG_VERSION = 1
SIG_SUFFIX = ".sig"
KEY_ID_LENGTH = 32  # hex digits of sha256(raw public key): 128 bits
MAX_SEQUENCE = (1 << 63) - 1
_KEY_ID = re.compile(rf"^[0-9a-f]{{{KEY_ID_LENGTH}}}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STATEMENT_KEYS = {"format", "format_version", "key_id", "index_sha256", "index_size", "sequence", "expires"}


# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's id: the first 32 hex digits of the sha256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


@dataclass(frozen=True)
class KeyFiles:
    """What `keygen` wrote."""

    private_key: Path
    public_key: Path
    key_id: str

    def to_json(self) -> dict[str, str]:
        return {
            "private_key": str(self.private_key),
            "public_key": str(self.public_key),
            "key_id": self.key_id,
        }


def key_paths(prefix: Path) -> tuple[Path, Path]:
    """PREFIX.key (private) and PREFIX.pub (public)."""
    return prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")


def keygen(prefix: Path) -> KeyFiles:
    """A new Ed25519 key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PEM); never overwrites."""
    private_path, public_path = key_paths(Path(prefix))
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise MirrorError(
                f"{path} already exists; refusing to overwrite a key (choose another -o PREFIX)"
            )
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
        _write_new(private_path, private_pem, 0o600)
        try:
            _write_new(public_path, public_pem, 0o644)
        except BaseException:
            private_path.unlink(missing_ok=True)
            raise
    except FileExistsError as e:
        raise MirrorError(f"{e.filename} already exists; refusing to overwrite a key") from None
    except OSError as e:
        raise MirrorError(f"writing the key pair {prefix} failed: {e}") from e
    return KeyFiles(private_path, public_path, key_id(public))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create path (it must not exist) with exactly `mode`, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file `mirror keygen` wrote (UsageError if it is not one)."""
    data = read_bounded(Path(path), KEY, UsageError)
    try:
        mode = Path(path).stat().st_mode
    except OSError as e:
        raise UsageError(f"cannot read the signing key {path}: {e.strerror or e}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path} is not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path} is not an Ed25519 key; make one with `mirror keygen`")
    if mode & 0o077:
        log.warning("the signing key %s is readable by others; chmod 600 it", path)
    return key


@dataclass(frozen=True)
class TrustedKey:
    """A public key the importer trusts, with where it came from (for messages)."""

    key_id: str
    key: Ed25519PublicKey
    path: Path


def load_public_key(path: Path) -> TrustedKey:
    """An Ed25519 public key from a PEM file (PREFIX.pub of `mirror keygen`)."""
    data = read_bounded(Path(path), KEY, UsageError)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path} is not a PEM public key ({e})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 public key; use the .pub file of `mirror keygen`")
    return TrustedKey(key_id(key), key, Path(path))


# --------------------------------------------------------------------------------------------------
# The signed statement
# --------------------------------------------------------------------------------------------------


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
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ValueError(f"invalid index_sha256 {digest!r}")
        if not _is_int(size) or not 0 < size <= MAX_INDEX_SIZE:
            raise ValueError(f"invalid index_size {size!r}")
        if not _is_int(sequence) or not 0 <= sequence <= MAX_SEQUENCE:
            raise ValueError(f"invalid sequence {sequence!r}")
        expiry = None
        if expires is not None:
            expiry = parse_iso(expires) if isinstance(expires, str) else None
            if expiry is None:
                raise ValueError(f"invalid expiry {expires!r}")
        return cls(kid, digest, size, sequence, expiry)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def signature_path(bundle: Path) -> Path:
    """OUT.tar.zst.sig beside OUT.tar.zst."""
    return bundle.with_name(bundle.name + SIG_SUFFIX)


def read_index_bytes(bundle: Path) -> bytes:
    """The exact bytes of the bundle's first member, `MIRROR-BUNDLE.json`, read by the bundle's own guarded
    reader (only the first member, at most MAX_INDEX_SIZE, validated as an index)."""
    with open_bundle(bundle) as reader:
        return reader.index_bytes


def parse_index_bytes(bundle: Path, data: bytes) -> BundleIndex:
    try:
        return BundleIndex.from_json(parse_json(data, INDEX))
    except ValueError as e:
        raise IntegrityError(f"{bundle}: unreadable bundle index: {e}") from None


@dataclass(frozen=True)
class Signed:
    """What `sign_bundle` wrote."""

    path: Path
    statement: Statement

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), **self.statement.to_json()}

    def describe(self) -> str:
        s = self.statement
        expiry = f"expires {iso(s.expires)}" if s.expires is not None else "no expiry"
        return f"key {s.key_id}, sequence {s.sequence}, {expiry}"


def sign_bundle(
    bundle: Path, key: Ed25519PrivateKey, *, sequence: int | None = None, expires: int | None = None
) -> Signed:
    """Write BUNDLE.sig: a statement over the bundle's index bytes, signed with `key`.

    `sequence` defaults to the signing time in unix seconds: it grows with every export and needs no state
    on the connected side. `expires` is absolute (unix seconds).
    """
    bundle = Path(bundle)
    data = read_index_bytes(bundle)
    parse_index_bytes(bundle, data)  # never sign what an importer would refuse
    statement = Statement(
        key_id=key_id(key.public_key()),
        index_sha256=hashlib.sha256(data).hexdigest(),
        index_size=len(data),
        sequence=int(time.time()) if sequence is None else sequence,
        expires=expires,
    )
    if not 0 <= statement.sequence <= MAX_SEQUENCE:
        raise UsageError(f"invalid sequence {statement.sequence} (want 0 to {MAX_SEQUENCE})")
    signature = key.sign(statement.canonical())
    document = {"signature": base64.b64encode(signature).decode("ascii"), "statement": statement.to_json()}
    path = signature_path(bundle)
    try:
        atomic_write_bytes(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())
    except OSError as e:
        raise MirrorError(f"writing the signature {path} failed: {e}") from e
    return Signed(path, statement)


def read_signature(path: Path) -> tuple[Statement, bytes]:
    """The statement and the raw signature of a `.sig` file (IntegrityError if malformed)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("a key appears twice")
        return dict(pairs)

    raw = read_bounded(path, SIGNATURE, IntegrityError)
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


# --------------------------------------------------------------------------------------------------
# Trust: the import side
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustPolicy:
    """Which keys an import trusts. With any key, or `required`, every bundle must carry a valid signature."""

    keys: tuple[TrustedKey, ...] = ()
    required: bool = False

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

    bundle: Path
    statement: Statement
    state: Path

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
                        "accepted": iso(int(time.time())),
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
    if not _is_int(sequence):
        raise MirrorError(f"the trust state {state} holds no sequence; restore or remove it")
    return cast(int, sequence)


def check_trust(
    policy: TrustPolicy | None,
    bundle: Path,
    index: BundleIndex,
    *,
    index_bytes: bytes,
    state_dir: Path,
    now: float | None = None,
) -> Acceptance | None:
    """Refuse (IntegrityError), before anything is written, a bundle the policy does not accept.

    `index` is the one the import streams against, and `index_bytes` the bytes it was read from: the
    signed index bytes must be those and parse to exactly it, so the import's own verification then pins
    every file to what was signed. `state_dir` is where the target keeps the highest sequence accepted per
    key (`Layout.trust_dir`). None when no policy applies.
    """
    bundle = Path(bundle)
    sig = signature_path(bundle)
    if policy is None or not policy.active:
        if sig.exists():
            log.info("%s not checked: no --trust key given", sig.name)
        return None
    if not sig.exists():
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
    data = index_bytes
    digest = hashlib.sha256(data).hexdigest()
    if digest != statement.index_sha256 or len(data) != statement.index_size:
        raise IntegrityError(
            f"{bundle.name}: its index (sha256 {digest}, {len(data)} bytes) is not the one {sig.name} signs "
            f"(sha256 {statement.index_sha256}, {statement.index_size} bytes); the bundle was altered or the "
            ".sig belongs to another bundle"
        )
    if parse_index_bytes(bundle, data) != index:
        raise IntegrityError(f"{bundle.name} changed while it was being read; copy it again")
    now = time.time() if now is None else now
    if statement.expires is not None and now >= statement.expires:
        raise IntegrityError(
            f"{sig.name}: the signature expired at {iso(statement.expires)} (now {iso(int(now))}); "
            "export and sign a fresh bundle (or check this machine's clock)"
        )
    state = state_dir / f"{statement.key_id}.json"
    accepted = read_sequence(state)
    if accepted is not None and statement.sequence < accepted:
        raise IntegrityError(
            f"{sig.name}: sequence {statement.sequence} is older than sequence {accepted} already accepted "
            f"from key {statement.key_id} (rollback refused; recorded in {state}); import a "
            "newer bundle"
        )
    return Acceptance(bundle, statement, state)


__all__ = [
    "Acceptance",
    "KeyFiles",
    "Signed",
    "Statement",
    "TrustPolicy",
    "TrustedKey",
    "check_trust",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "read_index_bytes",
    "read_sequence",
    "read_signature",
    "sign_bundle",
    "signature_path",
]
