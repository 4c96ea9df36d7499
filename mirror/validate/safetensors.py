"""The safetensors check: the header of a `.safetensors` file parsed and held against its data.

Layout (the safetensors library's): an 8-byte little-endian header length N, N bytes of UTF-8 JSON (an
object, padded with spaces), then the data. The object maps each tensor's name to its `dtype`, `shape`
and `data_offsets` [begin, end) into the data; the optional `__metadata__` is a map of strings. Checked:
N within the library's own limit and the file, the JSON valid and no key repeated, every dtype known,
every shape's byte size (elements × dtype bits / 8) equal to its span, the spans contiguous from 0,
non-overlapping, covering the data exactly (no trailing bytes). Only the header is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from mirror.bounded import Bound, parse_json
from mirror.validate.findings import Finding
from mirror.validate.reader import HeaderReader, Malformed, invalid, shown

SUFFIX = ".safetensors"
# The safetensors library refuses a longer header (MAX_HEADER_SIZE in its tensor.rs): so do we, unread.
MAX_HEADER = 100_000_000
HEADER = Bound("safetensors header", MAX_HEADER, depth=8)  # a valid header nests 3 deep
# Bits per element of each dtype the library knows (its Dtype enum and bitsize()); a tensor of a
# sub-byte dtype (F4, F6_*) must fill whole bytes.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
METADATA = "__metadata__"


def check_safetensors(path: str, stream: BinaryIO, size: int) -> list[Finding]:
    """The defects of the safetensors file `path` (`size` bytes, read from `stream`); [] when it holds."""
    reader = HeaderReader(stream, size)
    try:
        header, repeated = _read_header(reader)
    except Malformed as e:
        return invalid(path, [str(e)])
    return invalid(
        path, [*(f"the header repeats the key {shown(k)}" for k in repeated), *_defects(header, reader.left)]
    )


def spans_of(stream: BinaryIO, size: int, dtypes: frozenset[str]) -> list[tuple[int, int]]:
    """Where the tensors of `dtypes` lie in the file (`size` bytes, read from `stream` at its first byte), as
    the header says: [begin, end) file offsets, sorted, those that fit the file only. [] when the header
    does not parse. The header is data: a caller must not trust the spans beyond their bounds (they may
    overlap, or name the wrong dtype)."""
    reader = HeaderReader(stream, size)
    try:
        header, _ = _read_header(reader)
    except Malformed:
        return []
    start = reader.pos
    spans = []
    for name, info in header.items():
        if name == METADATA or not isinstance(info, dict) or info.get("dtype") not in dtypes:
            continue
        offsets = info.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and all(_natural(n) for n in offsets):
            begin, end = offsets
            if begin < end <= reader.left:
                spans.append((start + begin, start + end))
    return sorted(spans)


def _read_header(reader: HeaderReader) -> tuple[dict[str, Any], list[str]]:
    """The header object and the keys its objects repeat (json.loads would keep the last silently)."""
    (length,) = reader.unpack("<Q", "the 8-byte header length")
    if length > MAX_HEADER:
        raise Malformed(f"the header length is {length} bytes, over the limit of {MAX_HEADER}")
    text = reader.read(length, f"the header ({length} bytes)")
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                repeated.append(key)
            seen[key] = value
        return seen

    try:
        header = parse_json(text, HEADER, object_pairs_hook=pairs)
    except ValueError as e:
        raise Malformed(f"the header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise Malformed(f"the header is a JSON {type(header).__name__}, not an object")
    return header, repeated


def _defects(header: dict[str, Any], data_length: int) -> Iterator[str]:
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == METADATA:
            yield from _metadata_defects(info)
        else:
            span, defects = _tensor(name, info, data_length)
            yield from defects
            if span is not None:
                spans.append((*span, name))
    yield from _coverage(spans, data_length)


def _metadata_defects(metadata: Any) -> Iterator[str]:
    if metadata is None:  # the library reads a null as no metadata
        return
    if not isinstance(metadata, dict):
        yield f"{METADATA} is a JSON {type(metadata).__name__}, not an object of strings"
        return
    for key, value in metadata.items():
        if not isinstance(value, str):
            yield f"{METADATA} {shown(key)} is a JSON {type(value).__name__}, not a string"


def _tensor(name: str, info: Any, data_length: int) -> tuple[tuple[int, int] | None, list[str]]:
    """A tensor entry's data span (when its offsets are readable) and its defects."""
    tensor = f"tensor {shown(name)}"
    if not isinstance(info, dict):
        return None, [f"{tensor} is a JSON {type(info).__name__}, not an object"]
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in info]
    if missing:
        return None, [f"{tensor} has no {' and no '.join(missing)}"]
    defects = []
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    bits = DTYPE_BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        defects.append(f"{tensor} has an unknown dtype {shown(str(dtype))}")
    if not (isinstance(shape, list) and all(_natural(n) for n in shape)):
        defects.append(f"{tensor} has a shape that is not a list of non-negative integers")
        shape = None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_natural(n) for n in offsets)):
        return None, [*defects, f"{tensor} has data_offsets that are not two non-negative integers"]
    begin, end = offsets
    if end < begin:
        return None, [*defects, f"{tensor} ends (byte {end}) before it begins (byte {begin})"]
    if end > data_length:
        defects.append(f"{tensor} ends at byte {end} of the data, which holds {data_length}")
    elif bits is not None and shape is not None:
        defects.extend(_size_defects(tensor, dtype, bits, shape, end - begin))
    return (begin, end), defects


def _size_defects(tensor: str, dtype: str, bits: int, shape: list[int], length: int) -> list[str]:
    elements = 0 if 0 in shape else 1
    for n in shape if elements else ():
        elements *= n
        if elements > length * 8:  # already more than the span holds (and the product stays small)
            return [f"{tensor} has {length} bytes, fewer than its shape {_shape(shape)} of {dtype} needs"]
    if elements * bits % 8:
        return [f"{tensor}'s {elements} elements of {dtype} do not fill whole bytes"]
    needed = elements * bits // 8
    if needed != length:
        return [f"{tensor} has {length} bytes, its shape {_shape(shape)} of {dtype} needs {needed}"]
    return []


def _coverage(spans: list[tuple[int, int, str]], data_length: int) -> Iterator[str]:
    """The spans, in order of their offsets, must follow one another from 0 to the end of the data."""
    reached, last = 0, ""
    for begin, end, name in sorted(spans):
        if begin < reached:
            yield f"tensor {shown(name)} (bytes {begin} to {end}) overlaps tensor {shown(last)}"
        elif begin > reached:
            yield f"bytes {reached} to {begin} of the data belong to no tensor"
        if end > reached:
            reached, last = end, name
    if reached < data_length:
        yield f"the last {data_length - reached} bytes of the file belong to no tensor"


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _shape(shape: list[int]) -> str:
    text = str(shape)
    return text if len(text) <= 80 else text[:80] + "...]"
