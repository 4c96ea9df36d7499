"""Signed bundles: Ed25519 keys, the detached `OUT.tar.zst.sig` over a bundle's index, and the import's trust.

Two ideas, each its own module:

- keys and signed statements: `keys` (make, name and load Ed25519 keys) and `statement` (what a signature
  says, the `.sig` file beside a bundle, `sign_bundle`), used by `mirror keygen` and `mirror export --sign`;
- the importer's trust: `trust` (`TrustPolicy`, `check_trust` before anything is written, the highest
  sequence accepted per key, kept in the trust state the layout gives (`SequenceState`: a folder,
  `FolderSequences`, or a store's storage), so a rollback is refused).
"""

from mirror.signing.keys import KeyFiles, TrustedKey, key_id, keygen, load_private_key, load_public_key
from mirror.signing.statement import (
    Signed,
    Statement,
    read_index_bytes,
    read_signature,
    sign_bundle,
    signature_path,
)
from mirror.signing.trust import (
    Acceptance,
    FolderSequences,
    SequenceState,
    TrustPolicy,
    check_trust,
    read_sequence,
)

__all__ = [
    "Acceptance",
    "FolderSequences",
    "KeyFiles",
    "SequenceState",
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
