"""Sizes and durations on the command line, and sizes as people read them (`human_size`).

Sizes, as GNU `split` reads them: K, M, G, T are powers of 1024; KB, MB, GB, TB of 1000.

A CLI contract (README, `export --split`): `--split 25G` is 25 GiB, `--split 25GB` is 25 * 10^9 bytes. A plain number is
bytes; `KiB`-style suffixes and a trailing `B` after a binary unit (`25GiB`) are accepted too, lower case
as well.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes for `25G`, `700M`, `4700MB`, `1048576`; ValueError saying what is accepted."""
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"invalid size {text!r}: want a whole number with an optional unit, K, M, G, T (powers of 1024, "
            "as GNU split) or KB, MB, GB, TB (powers of 1000), e.g. 25G"
        )
    return int(match.group(1)) * _UNITS[unit]


def format_size(n: int) -> str:
    """The shortest exact form parse_size reads back: 25G, 4700MB, 1000."""
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    for suffix, unit in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def human_size(n: float) -> str:
    """A size for people to read, in powers of 1024: `512 B`, `1.5 KiB`, `3.0 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


_DURATION = re.compile(r"^([0-9]{1,12})([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`30d`, `12h`, `90m`, `3600s` -> seconds (ValueError otherwise)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"invalid duration {text!r}: want a positive number with a unit s, m, h or d (e.g. 30d)"
        )
    return int(match.group(1)) * _SECONDS[match.group(2)]
