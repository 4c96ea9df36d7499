"""What a refusal names: the entries of SHA256SUMS that disagree with the index, and the members whose
bytes a damaged zstd frame holds (found from where mirror writes each member in the tar stream).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

from mirror.bundle.frames import FRAME, FrameError
from mirror.bundle.index import INDEX_NAME, README_NAME, SUMS_NAME, BundleIndex
from mirror.bundle.members import iter_members, readme_text, sums_text
from mirror.paths import is_sha256


def frame_holds(frame: FrameError, index_bytes: bytes | None, index: BundleIndex | None) -> str:
    """Name the members whose bytes (header, data, padding) a damaged frame holds, by where mirror
    writes them; a frame whose header does not say its size holds at most FRAME bytes."""
    start = frame.stream_offset
    end = start + (frame.stream_size if frame.stream_size is not None else FRAME)
    if index is None or index_bytes is None:  # the index itself was not read: nothing else can be placed
        return f"stream bytes {start}-{end}, where the bundle index {INDEX_NAME} is"
    names = [name for at, until, name in _spans(index_bytes, index) if at < end and until > start]
    shown = ", ".join(map(repr, names[:5])) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    what = f"member(s) {shown}" if names else "no member (the end of the archive)"
    return f"stream bytes {start}-{end}: {what}"


def sums_disagreement(expected: bytes, actual: bytes) -> str:
    """Which entries of SHA256SUMS differ from what the index implies, and how: missing, extra, another
    sha256, or a line not of the form `<sha256>  <path>`."""
    want, _ = _sums_entries(expected)
    have, malformed = _sums_entries(actual)
    problems = [f"line {n} {line!r} is not '<sha256>  <path>'" for n, line in malformed]
    problems += [f"{name!r} is missing" for name in want if name not in have]
    problems += [f"{name!r} is extra (not in the index)" for name in have if name not in want]
    problems += [
        f"{name!r} has sha256 {have[name]} where the index says {digest}"
        for name, digest in want.items()
        if name in have and have[name] != digest
    ]
    if not problems:  # the same entries: in another order, repeated, or spaced otherwise
        problems = ["its entries are those of the index, but not in the order and form mirror writes"]
    more = f", and {len(problems) - 5} more" if len(problems) > 5 else ""
    return ", ".join(problems[:5]) + more


def _sums_entries(text: bytes) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """path -> sha256 of each `<sha256>  <path>` line, and the (line number, line) of any other."""
    entries: dict[str, str] = {}
    malformed: list[tuple[int, str]] = []
    lines = text.decode("utf-8", "replace").split("\n")
    for n, line in enumerate(lines[:-1] if lines[-1] == "" else lines, 1):
        digest, sep, name = line.partition("  ")
        if sep and is_sha256(digest):
            entries[name] = digest
        else:
            malformed.append((n, line))
    return entries, malformed


def _spans(index_bytes: bytes, index: BundleIndex) -> Iterator[tuple[int, int, str]]:
    """(start, end, name) of each member in the tar stream as mirror writes it: its header (pax where the
    name needs one), its data, padding to a block."""
    pos = 0
    members: list[tuple[str, int, str | None]] = [
        (INDEX_NAME, len(index_bytes), None),
        (SUMS_NAME, len(sums_text(index)), None),
    ]
    if (readme := readme_text(index)) is not None:
        members.append((README_NAME, len(readme), None))
    members += [(m.name, 0 if m.link_to else m.size, m.link_to) for m in iter_members(index)]
    for name, size, link in members:
        info = tarfile.TarInfo(name)
        info.size = size
        if link is not None:
            info.type, info.linkname = tarfile.LNKTYPE, link
        end = pos + len(info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"))
        end += size + -size % tarfile.BLOCKSIZE
        yield pos, end, name
        pos = end
