"""Model files that hold together, for tests that sync them (a sync refuses an invalid safetensors or ONNX
header): `safetensors_sized` keeps a test's bytes and size, `ONNX_MODEL` is a small valid ONNX model."""

from __future__ import annotations

import json
import struct

from mirror.validate.safetensors import DTYPE_BITS

HEADER = 128  # bytes of JSON header, padded with spaces


def safetensors_sized(payload: bytes) -> bytes:
    """A valid safetensors file exactly as long as `payload` (at least 136 bytes): one U8 tensor holding the
    payload's first bytes after the header."""
    head = safetensors_head(len(payload))
    return head + payload[: len(payload) - len(head)]


def safetensors_head(size: int, dtype: str = "U8") -> bytes:
    """The first 136 bytes of a valid safetensors file of `size` bytes (one tensor of `dtype`, by default U8:
    any bytes follow; a wider dtype needs whole elements)."""
    data = size - 8 - HEADER
    assert data >= 0, "a file of at least 136 bytes"
    shape = [data * 8 // DTYPE_BITS[dtype]]
    text = json.dumps({"w": {"dtype": dtype, "shape": shape, "data_offsets": [0, data]}}).encode()
    return struct.pack("<Q", HEADER) + text.ljust(HEADER)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return bytes([number << 3]) + bytes([value])
    return bytes([number << 3 | 2, len(value)]) + value


# ir_version 9, producer "pytorch", a graph (node, name), opset_import {"", 17}
ONNX_MODEL = (
    _field(1, 9)
    + _field(2, b"pytorch")
    + _field(7, _field(1, b"node") + _field(2, b"main"))
    + _field(8, _field(1, b"") + _field(2, 17))
)


def safetensors_of(tensors: list[tuple[str, str, bytes]], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file of (name, dtype, data) tensors, in that order, its header length as the JSON
    gives it (not padded: the data may start at any offset). The caller keeps each data's length whole
    elements of its dtype."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name, dtype, data in tensors:
        shape = [len(data) * 8 // DTYPE_BITS[dtype]]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"".join(data for _, _, data in tensors)
