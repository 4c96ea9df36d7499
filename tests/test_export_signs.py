"""Export signs the index bytes its writer wrote: it never reads a bundle back to sign it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import mirror.bundle.location as location_module
from mirror.bundle import read_index
from mirror.export import Signer, export
from mirror.signing import read_signature, signature_path
from tests.clocks import FakeClock
from tests.conftest import SampleStore


@pytest.mark.parametrize("split", [None, 40 << 10])
def test_export_signs_what_it_wrote_without_reading_it_back(
    sample_store: SampleStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, split: int | None
) -> None:
    opened: list[Path] = []
    real = location_module.open_regular

    def spy(path: Path, *args: Any, **kwargs: Any) -> int:
        opened.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(location_module, "open_regular", spy)
    result = export(
        sample_store.store,
        None,
        tmp_path / "b.tar.zst",
        split=split,
        signer=Signer(Ed25519PrivateKey.generate(), 5, clock=FakeClock().clock),
    )
    assert opened == []  # no bundle was opened to sign it
    assert result.volumes == (split is not None) and len(result.bundles) == (1 if split is None else 2)
    for exported in result.bundles:
        assert exported.signature is not None
        statement, _ = read_signature(signature_path(exported.summary.path))
        with monkeypatch.context() as m:
            m.setattr(location_module, "open_regular", real)
            index = read_index(exported.summary.path)
        assert exported.summary.index_bytes == index.to_bytes()
        assert statement.index_sha256 == hashlib.sha256(exported.summary.index_bytes).hexdigest()
        assert statement.index_size == len(exported.summary.index_bytes) and statement.sequence == 5
