"""Untrusted text made safe to show: control characters, bidi overrides and lone surrogates escaped.

Names from a hub, a bundle's index, a receipt or a file system reach the terminal, the logs and the reports;
a control sequence in one could rewrite the screen (ESC, CR, BEL, C1 controls), reorder what is read
(U+202E), or, as a lone surrogate (an undecodable file name byte under surrogateescape, a JSON "\\udc80"),
crash the write. `printable` is applied once, where text is written (the CLI's output, its error messages,
the log formatter, the progress bar).
"""

from __future__ import annotations

import re

# C0 and C1 controls and DEL, the bidi marks, embeddings, overrides and isolates, the line and paragraph
# separators, and every surrogate (a str holds one only when it could not be decoded).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: str) -> str:
    """`text` with each unsafe character as a visible escape (`\\x1b`, `\\u202e`, `\\udc80`, `\\n`)."""
    return _UNSAFE.sub(_escape, text)
