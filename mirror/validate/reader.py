"""A file's header read from a stream, for the header checks (safetensors, GGUF, ONNX): reads that stop at
the file's end as its recorded size gives it, skips that seek (or read and discard in chunks when the
stream cannot seek), and `Malformed`, the one error a check turns into a finding.

The stream is at the file's first byte. Nothing past what a check asks for is read, and nothing is read
before its length has been checked against what is left of the file: a huge count or length in a crafted
header is a finding, never an allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO

from mirror.hashing import CHUNK  # what a skip reads at a time from a stream that cannot seek
from mirror.validate.findings import Finding

MAX_FINDINGS = 20  # per file: past these, one more finding counts the rest
NAME_SHOWN = 120  # characters of a name from the file shown in a finding


class Malformed(ValueError):
    """What is wrong with a header, in words; a check catches it and returns it as a finding (it never
    leaves mirror.validate)."""


class HeaderReader:
    """Reads `size` bytes of `stream` in order, keeping its place (`pos`)."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.size = size
        self.pos = 0
        self.seeks = _seekable(stream)

    @property
    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        """Malformed when `what`, `n` bytes from here, would run past the end of the file."""
        if n > self.left:
            raise Malformed(
                f"{what} runs to byte {self.pos + n}, past the end of the file ({self.size} bytes)"
            )

    def read(self, n: int, what: str) -> bytes:
        self.need(n, what)
        parts: list[bytes] = []
        wanted = n
        while wanted:
            part = self.stream.read(min(wanted, CHUNK))
            if not part:
                raise self._ended(what)
            parts.append(part)
            wanted -= len(part)
        self.pos += n
        return b"".join(parts)

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        if self.seeks:
            self.stream.seek(n, 1)
        else:
            wanted = n
            while wanted:
                part = self.stream.read(min(wanted, CHUNK))
                if not part:
                    raise self._ended(what)
                wanted -= len(part)
        self.pos += n

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt), what))

    def _ended(self, what: str) -> Malformed:
        return Malformed(f"the file ends early, before {what} (its record says {self.size} bytes)")


def _seekable(stream: BinaryIO) -> bool:
    """Whether the stream moves by seek; one that only reads (a bundle's or a bucket's stream without
    `seekable`) is read and discarded instead."""
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def shown(name: str) -> str:
    """A name read from the file, quoted and cut short for a finding (the CLI escapes what it prints)."""
    return repr(name if len(name) <= NAME_SHOWN else name[:NAME_SHOWN] + "...")


def invalid(path: str, details: Iterable[str]) -> list[Finding]:
    """The `invalid` findings of `path`, at most MAX_FINDINGS of them and one counting the rest."""
    found: list[Finding] = []
    more = 0
    for detail in details:
        if len(found) < MAX_FINDINGS:
            found.append(Finding(path, "invalid", detail))
        else:
            more += 1
    if more:
        found.append(Finding(path, "invalid", f"and {more} more problems like these"))
    return found
