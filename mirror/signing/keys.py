"""Ed25519 keys for signed bundles: make a pair (`mirror keygen`), name a key by its id, load either half.

The private key signs on the connected side; the public key is what an importer trusts (`TrustedKey`).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mirror.bounded import KEY, read_bounded
from mirror.errors import MirrorError, UsageError
from mirror.records import FieldsJson

log = logging.getLogger(__name__)

KEY_ID_LENGTH = 32  # hex digits of sha256(raw public key): 128 bits


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's id: the first 32 hex digits of the sha256 of its 32 raw bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


@dataclass(frozen=True)
class KeyFiles(FieldsJson):
    """What `keygen` wrote."""

    private_key: Path
    public_key: Path
    key_id: str


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


__all__ = [
    "KEY_ID_LENGTH",
    "KeyFiles",
    "TrustedKey",
    "key_id",
    "key_paths",
    "keygen",
    "load_private_key",
    "load_public_key",
]
