"""The GGUF check: the header of a `.gguf` file (llama.cpp's format) walked and held against the file.

Layout (ggml's docs/gguf.md): "GGUF", a version (1, 2 or 3), the tensor count and the metadata count,
the metadata (key, type, value; values nest in arrays), then one info per tensor (name, dimensions, ggml
type, offset into the data), then the data, aligned to `general.alignment` (32 by default). Version 1
counts and measures strings with 32 bits, later versions with 64. Checked: magic and version, each count
and length against what is left of the file before anything is read for it, every value type known,
keys and tensor names UTF-8 and unique, `general.alignment` a power of two, each tensor's name,
dimensions (at most 4) and type, its offset aligned, its data (elements / block size × block bytes)
inside the file and overlapping no other's. Only the header is read: strings and arrays of numbers are
skipped, never loaded.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from mirror.validate.findings import Finding
from mirror.validate.reader import HeaderReader, Malformed, invalid, shown

SUFFIX = ".gguf"
MAGIC = b"GGUF"
VERSIONS = (1, 2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 63  # a tensor's name, in bytes (ggml's GGML_MAX_NAME is 64 with the terminating NUL)
MAX_KEY = 65535  # the spec's bound on a metadata key
MAX_DEPTH = 8  # arrays nested in arrays, far beyond any real file
MAX_TENSORS = 1 << 17  # tensor infos this check keeps (their spans); real models hold a few thousand
MAX_KVS = 1 << 17
MAX_ITEMS = 1 << 22  # strings and arrays inside arrays (a tokenizer's vocabulary holds a few 100 000)
INT64_MAX = (1 << 63) - 1

STRING, ARRAY = 8, 9
# Metadata value types (gguf_type) and the bytes of each fixed-size one.
VALUE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
UINT32 = 4
# ggml types (enum ggml_type, up to Q1_0 = 41): name, elements per block, bytes per block (gguf-py's
# GGML_QUANT_SIZES). Types ggml removed from GGUF files (4, 5, 31-33, 36-38) are unknown here too.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}


def check_gguf(path: str, stream: BinaryIO, size: int) -> list[Finding]:
    """The defects of the GGUF file `path` (`size` bytes, read from `stream`); [] when it holds."""
    walk = _Walk(HeaderReader(stream, size))
    try:
        walk.run()
    except Malformed as e:
        walk.defects.append(str(e))
    return invalid(path, walk.defects)


class _Walk:
    """One pass over the header: what breaks its structure raises Malformed (the walk cannot go on), the
    rest is noted in `defects` and the walk goes on."""

    def __init__(self, reader: HeaderReader) -> None:
        self.reader = reader
        self.defects: list[str] = []
        self.wide = True  # version 2 and later: 64-bit counts and lengths
        self.alignment = DEFAULT_ALIGNMENT
        self.items = 0  # strings and arrays walked one by one in arrays
        self.tensor_names: set[bytes] = set()

    def run(self) -> None:
        r = self.reader
        magic = r.read(4, "the magic")
        if magic != MAGIC:
            raise Malformed(f"the file does not begin with the GGUF magic (it begins with {magic!r})")
        (version,) = r.unpack("<I", "the version")
        if version not in VERSIONS:
            raise Malformed(f"unknown GGUF version {version} (known: 1, 2, 3)")
        self.wide = version >= 2
        # The least bytes of a tensor info (name length, dimension count, type, offset) and of a metadata
        # entry (key length, type, a one-byte value).
        length = 8 if self.wide else 4
        tensor_least, entry_least = length + 4 + 4 + 8, length + 4 + 1
        n_tensors = self.count("tensors", tensor_least, MAX_TENSORS)
        n_kvs = self.count("metadata entries", entry_least, MAX_KVS)
        if n_tensors * tensor_least + n_kvs * entry_least > r.left:
            raise Malformed(f"{n_tensors} tensors and {n_kvs} metadata entries cannot fit in the file")
        keys: set[bytes] = set()
        for _ in range(n_kvs):
            self.entry(keys)
        spans = [self.tensor_info() for _ in range(n_tensors)]
        self.data(spans)

    def count(self, what: str, least: int, most: int) -> int:
        (n,) = self.reader.unpack("<Q" if self.wide else "<I", f"the count of {what}")
        if n * least > self.reader.left:
            raise Malformed(
                f"the header claims {n} {what}, more than the file's {self.reader.size} bytes hold"
            )
        if n > most:
            raise Malformed(f"the header claims {n} {what}, more than this check reads ({most})")
        return n

    def length(self, what: str) -> int:
        (n,) = self.reader.unpack("<Q" if self.wide else "<I", f"the length of {what}")
        self.reader.need(n, f"{what} ({n} bytes)")
        return n

    def entry(self, keys: set[bytes]) -> None:
        r = self.reader
        n = self.length("a metadata key")
        if n > MAX_KEY:
            raise Malformed(f"a metadata key at byte {r.pos} is {n} bytes long, over the limit of {MAX_KEY}")
        key = r.read(n, "a metadata key")
        name = self.name(key, "the metadata key", keys)
        (kind,) = r.unpack("<I", f"the type of metadata {name}")
        if key == b"general.alignment":
            self.read_alignment(kind)
        else:
            self.value(kind, f"metadata {name}", 0)

    def name(self, raw: bytes, what: str, seen: set[bytes]) -> str:
        """A key or tensor name as shown in a finding; noted when it is not UTF-8 or was seen before."""
        try:
            name = shown(raw.decode("utf-8"))
        except UnicodeDecodeError:
            name = shown(raw.decode("utf-8", "replace"))
            self.defects.append(f"{what} {name} is not UTF-8 text")
        digest = hashlib.sha256(raw).digest()  # a name's digest, not the name: the set stays small
        if digest in seen:
            self.defects.append(f"{what} {name} appears twice")
        seen.add(digest)
        return name

    def read_alignment(self, kind: int) -> None:
        if kind != UINT32:
            self.defects.append(f"general.alignment has type {kind}, not uint32 ({UINT32})")
            self.value(kind, "general.alignment", 0)
            return
        (alignment,) = self.reader.unpack("<I", "general.alignment")
        if alignment == 0 or alignment & (alignment - 1):
            self.defects.append(f"general.alignment is {alignment}, not a power of two")
        else:
            self.alignment = alignment

    def value(self, kind: int, what: str, depth: int) -> None:
        r = self.reader
        if kind in VALUE_SIZES:
            r.skip(VALUE_SIZES[kind], what)
        elif kind == STRING:
            r.skip(self.length(what), what)
        elif kind == ARRAY:
            if depth >= MAX_DEPTH:
                raise Malformed(f"{what} nests arrays deeper than {MAX_DEPTH} levels")
            (item,) = r.unpack("<I", f"the item type of {what}")
            (n,) = r.unpack("<Q" if self.wide else "<I", f"the length of {what}")
            least = VALUE_SIZES.get(item, 8 if self.wide else 4)  # a string's or an array's length
            if item not in VALUE_SIZES and item not in (STRING, ARRAY):
                raise Malformed(f"{what} is an array of unknown type {item}")
            if n * least > r.left:
                raise Malformed(f"{what} claims {n} items, more than the rest of the file holds")
            if item in VALUE_SIZES:
                r.skip(n * least, what)
            else:
                self.items += n
                if self.items > MAX_ITEMS:
                    raise Malformed(f"the metadata holds more than {MAX_ITEMS} strings and arrays in arrays")
                for _ in range(n):
                    self.value(item, what, depth + 1)
        else:
            raise Malformed(f"{what} has unknown type {kind}")

    def tensor_info(self) -> tuple[int, int, str]:
        """A tensor's (offset, bytes, shown name); its defects noted, the walk going on."""
        r = self.reader
        n = self.length("a tensor name")
        if n > MAX_NAME:
            raise Malformed(
                f"a tensor name at byte {r.pos} is {n} bytes long, over ggml's limit of {MAX_NAME}"
            )
        name = self.name(r.read(n, "a tensor name"), "the tensor name", self.tensor_names)
        tensor = f"tensor {name}"
        (n_dims,) = r.unpack("<I", f"the dimension count of {tensor}")
        if n_dims > MAX_DIMS:
            raise Malformed(f"{tensor} has {n_dims} dimensions, more than {MAX_DIMS}")
        dims = r.unpack(("<%dQ" if self.wide else "<%dI") % n_dims, f"the dimensions of {tensor}")
        kind, offset = r.unpack("<IQ", f"the type and offset of {tensor}")
        elements = 1
        for dim in dims:
            elements *= dim
        if any(dim > INT64_MAX for dim in dims) or elements > INT64_MAX:
            self.defects.append(f"{tensor} has dimensions {list(dims)}, past what ggml counts (2^63)")
            return offset, 0, name
        if kind not in GGML_TYPES:
            self.defects.append(f"{tensor} has unknown ggml type {kind}")
            return offset, 0, name
        type_name, block, block_bytes = GGML_TYPES[kind]
        if dims and dims[0] % block:
            self.defects.append(f"{tensor} rows of {dims[0]} are not whole {type_name} blocks of {block}")
        return offset, elements // block * block_bytes, name

    def data(self, spans: list[tuple[int, int, str]]) -> None:
        r = self.reader
        start = -(-r.pos // self.alignment) * self.alignment
        data_length = r.size - start
        reached, last = 0, ""
        for offset, length, name in sorted(spans):
            tensor = f"tensor {name}"
            if offset % self.alignment:
                self.defects.append(
                    f"{tensor} has offset {offset}, not a multiple of the alignment {self.alignment}"
                )
            if offset + length > data_length:
                self.defects.append(
                    f"{tensor} ends at byte {start + offset + length}, past the end of the file ({r.size} bytes)"
                )
            if offset < reached:
                self.defects.append(
                    f"{tensor} (data at {offset} to {offset + length}) overlaps tensor {last}"
                )
            if offset + length > reached:
                reached, last = offset + length, name
