"""Which header check reads which file: one table from a repo path's suffix to its check.

`header_check(path)` is the check a path's suffix names (`.safetensors`, `.gguf`, `.onnx`, in any case), or
None (`mirror.validate.scan.checks_for` runs it with the others). Each check reads only the
header, from a stream at the file's first byte, and returns `invalid` findings, never raising for what
the file holds (an I/O error of the stream itself is not a finding, and passes through).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from mirror.validate import gguf, onnx, safetensors
from mirror.validate.findings import Finding

Check = Callable[[str, BinaryIO, int], list[Finding]]

HEADER_CHECKS: dict[str, Check] = {
    safetensors.SUFFIX: safetensors.check_safetensors,
    gguf.SUFFIX: gguf.check_gguf,
    onnx.SUFFIX: onnx.check_onnx,
}


def header_check(path: str) -> Check | None:
    """The check for the repo file `path`, by its suffix; None when no header check applies."""
    lowered = path.lower()
    return next((check for suffix, check in HEADER_CHECKS.items() if lowered.endswith(suffix)), None)
