"""What one import takes as a whole: a bundle, or the volumes given of one set. Each volume's index is read
here, once per import, with its exact bytes (what names the bundle and what a signature pins)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from mirror.bundle import BundleIndex, open_bundle
from mirror.bundle.location import BundlePath, bundle_path
from mirror.errors import MirrorError


@dataclass(frozen=True)
class Volume:
    """A bundle given to an import (or one volume of a set), with its index as read."""

    path: BundlePath
    index: BundleIndex
    index_bytes: bytes

    @property
    def number(self) -> int:
        """Its number in its set (1-based); 0 for a plain bundle."""
        return self.index.volume_set.volume if self.index.volume_set is not None else 0

    @property
    def index_sha256(self) -> str:
        """The sha256 of its index: the bundle's id."""
        return hashlib.sha256(self.index_bytes).hexdigest()


@dataclass(frozen=True)
class ImportUnit:
    """What one import takes as a whole: a bundle, or the volumes given of one set (in volume order).

    `error` is set for a bundle whose index cannot be read (it is refused, and named, when imported).
    """

    volumes: tuple[Volume, ...]
    error: MirrorError | None = None
    path: BundlePath | None = None

    @property
    def index(self) -> BundleIndex:
        return self.volumes[0].index

    @property
    def given(self) -> frozenset[int]:
        """The numbers of the volumes given (0 for a plain bundle)."""
        return frozenset(v.number for v in self.volumes)

    @property
    def label(self) -> str:
        """The bundle's name; for a set, its name without the volume number (`models.tar.zst`)."""
        if not self.volumes:
            return self.path.name if self.path is not None else "?"
        first = self.volumes[0]
        if first.index.volume_set is None:
            return first.path.name
        return set_label(first.index.volume_set.names[0])

    @property
    def paths(self) -> list[BundlePath]:
        return [v.path for v in self.volumes] or ([self.path] if self.path is not None else [])


def set_label(first_volume: str) -> str:
    """`models.001.tar.zst` -> `models.tar.zst`."""
    head, suffix, _ = first_volume.rpartition(".tar.zst")
    base, dot, number = head.rpartition(".")
    return f"{base}{suffix}" if dot and number.isdigit() else first_volume


def read_volume(path: BundlePath) -> Volume:
    """A bundle's index and its bytes; reads only the first member."""
    with open_bundle(path) as reader:
        return Volume(path, reader.index, reader.index_bytes)


def group_bundles(bundles: Iterable[BundlePath | str]) -> list[ImportUnit]:
    """The import units of the bundles given (in the order first met): each plain bundle alone, the volumes
    of one set together whatever their order (a volume given twice counts once). Only indexes are read."""
    units: list[ImportUnit] = []
    sets: dict[str, int] = {}
    for path in map(bundle_path, bundles):
        try:
            volume = read_volume(path)
        except MirrorError as e:
            units.append(ImportUnit((), error=e, path=path))
            continue
        volume_set = volume.index.volume_set
        if volume_set is None:
            units.append(ImportUnit((volume,)))
            continue
        at = sets.setdefault(volume_set.id, len(units))
        if at == len(units):
            units.append(ImportUnit((volume,)))
        elif all(v.number != volume.number for v in units[at].volumes):
            units[at] = ImportUnit(tuple(sorted((*units[at].volumes, volume), key=lambda v: v.number)))
    return units
