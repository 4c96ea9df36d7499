"""The ONNX check: an `.onnx` file walked as a protobuf ModelProto, its top level only.

Each top-level field is a tag (a varint: field number and wire type) and a value: a varint (at most 10
bytes), 8 or 4 bytes, or a length and that many bytes, which must lie inside the file. Checked: every
tag and wire type valid, every field inside the file and the last one ending at its end, `ir_version`
(field 1) present and plausible, `graph` (7) present, and `opset_import` (8) present with each entry
(domain, version) well formed. The graph and every other large field are skipped (seeked over, or read
and discarded when the stream cannot seek), never parsed: tensors kept in other files (external data)
are the graph's business, not this check's.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from mirror.validate.findings import Finding
from mirror.validate.reader import HeaderReader, Malformed, invalid

SUFFIX = ".onnx"
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
FIXED = {FIXED64: 8, FIXED32: 4}
IR_VERSION, GRAPH, OPSET_IMPORT = 1, 7, 8
KNOWN = {IR_VERSION: ("ir_version", VARINT), GRAPH: ("graph", LENGTH), OPSET_IMPORT: ("opset_import", LENGTH)}
MAX_IR_VERSION = 32  # ONNX is at 12 or so; a larger one is not a real model's
MAX_OPSET_ENTRY = 1 << 16  # an opset_import entry is a domain name and a number
MAX_FIELDS = 1 << 16  # top-level fields: a model has a dozen or so (and an opset_import per domain)


def check_onnx(path: str, stream: BinaryIO, size: int) -> list[Finding]:
    """The defects of the ONNX model `path` (`size` bytes, read from `stream`); [] when it holds."""
    reader = HeaderReader(stream, size)
    defects: list[str] = []
    seen: set[int] = set()
    fields = 0
    try:
        while reader.left:
            fields += 1
            if fields > MAX_FIELDS:
                raise Malformed(f"the model has more than {MAX_FIELDS} top-level fields: not an ONNX model")
            number, wire = _tag(reader)
            seen.add(number)
            what = f"the {KNOWN[number][0]} (field {number})" if number in KNOWN else f"field {number}"
            if number in KNOWN and wire != KNOWN[number][1]:
                raise Malformed(f"{what} has wire type {wire}, not {KNOWN[number][1]}")
            if number == IR_VERSION:
                version = _varint(reader, what)
                if not 1 <= version <= MAX_IR_VERSION:
                    defects.append(
                        f"ir_version is {version}, not a known ONNX IR version (1 to {MAX_IR_VERSION})"
                    )
            elif number == OPSET_IMPORT:
                defects.extend(_opset(reader, _length(reader, what)))
            else:
                _skip(reader, wire, what)
    except Malformed as e:
        defects.append(str(e))
    else:
        defects.extend(f"the model has no {KNOWN[n][0]} (field {n})" for n in KNOWN if n not in seen)
    return invalid(path, defects)


def _tag(reader: HeaderReader) -> tuple[int, int]:
    at = reader.pos
    tag = _varint(reader, f"the field tag at byte {at}")
    number, wire = tag >> 3, tag & 7
    if number == 0 or number >= 1 << 29:
        raise Malformed(
            f"the field tag at byte {at} has field number {number}, outside 1 to 2^29 - 1: not protobuf"
        )
    if wire not in (VARINT, FIXED64, LENGTH, FIXED32):
        raise Malformed(f"field {number} at byte {at} has wire type {wire}, not one ONNX uses: not protobuf")
    return number, wire


def _varint(reader: HeaderReader, what: str) -> int:
    value = 0
    for i in range(10):
        (byte,) = reader.read(1, what)
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if value >> 64:
                raise Malformed(f"{what} is a varint over 64 bits")
            return value
    raise Malformed(f"{what} is a varint longer than 10 bytes")


def _length(reader: HeaderReader, what: str) -> int:
    length = _varint(reader, f"the length of {what}")
    reader.need(length, f"{what} of {length} bytes")
    return length


def _skip(reader: HeaderReader, wire: int, what: str) -> None:
    if wire == VARINT:
        _varint(reader, what)
    else:
        reader.skip(FIXED[wire] if wire in FIXED else _length(reader, what), what)


def _opset(reader: HeaderReader, length: int) -> list[str]:
    """The defects of one OperatorSetIdProto (1: domain, a string; 2: version, an int64)."""
    if length > MAX_OPSET_ENTRY:
        reader.skip(length, "an opset_import entry")
        return [f"an opset_import entry is {length} bytes long, over {MAX_OPSET_ENTRY}"]
    entry = HeaderReader(io.BytesIO(reader.read(length, "an opset_import entry")), length)
    defects = []
    try:
        while entry.left:
            number, wire = _tag(entry)
            if number == 1 and wire == LENGTH:
                domain = entry.read(_length(entry, "the opset domain"), "the opset domain")
                try:
                    domain.decode("utf-8")
                except UnicodeDecodeError:
                    defects.append("an opset_import domain is not UTF-8 text")
            elif number == 2 and wire == VARINT:
                _varint(entry, "the opset version")
            elif number in (1, 2):
                defects.append(f"an opset_import entry's field {number} has wire type {wire}")
                _skip(entry, wire, f"opset_import field {number}")
            else:
                _skip(entry, wire, f"opset_import field {number}")
    except Malformed as e:
        defects.append(f"an opset_import entry is not protobuf: {e}")
    return defects
