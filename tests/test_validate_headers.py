"""The header checks (issue 15): safetensors, GGUF and ONNX headers that hold together pass, and each defect,
truncation or hostile value gives an `invalid` finding naming it, never an exception, a hang or a large
read. Fixtures are written here byte by byte (GGUF and ONNX by small writers, safetensors by its library
through numpy; the torch-written files are in the end-to-end tier)."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from mirror.validate.findings import Finding
from mirror.validate.gguf import MAX_ITEMS, MAX_TENSORS, check_gguf
from mirror.validate.headers import header_check
from mirror.validate.onnx import MAX_FIELDS, check_onnx
from mirror.validate.reader import MAX_FINDINGS
from mirror.validate.safetensors import MAX_HEADER, check_safetensors
from mirror.validate.scan import ScanFile, scan_file
from tests.roundtrip import minilm_folder

Check = Callable[[str, BinaryIO, int], list[Finding]]


class Counting(io.RawIOBase):
    """A stream over `data` (bytes or a file) that counts what is read from it, seekable or not."""

    def __init__(self, data: bytes | BinaryIO, *, seekable: bool = True) -> None:
        self.inner = io.BytesIO(data) if isinstance(data, bytes) else data
        self.can_seek = seekable
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.can_seek

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self.inner.readinto(buffer)
        self.bytes_read += n
        return n

    def seek(self, offset: int, whence: int = 0) -> int:
        if not self.can_seek:
            raise io.UnsupportedOperation("seek")
        return self.inner.seek(offset, whence)


def run(check: Check, data: bytes, *, size: int | None = None, seekable: bool = True) -> list[str]:
    """The details of check's findings on data (all `invalid`, all naming the path)."""
    found = check("repo/file", Counting(data, seekable=seekable), len(data) if size is None else size)
    assert all(f.kind == "invalid" and f.path == "repo/file" for f in found)
    return [f.detail for f in found]


def one(check: Check, data: bytes, needle: str, **kwargs: object) -> None:
    details = run(check, data, **kwargs)
    assert any(needle in d for d in details), details


def every_cut_is_a_finding(check: Check, data: bytes) -> None:
    assert run(check, data) == []
    for cut in range(len(data)):
        assert run(check, data[:cut]), f"cut at {cut} of {len(data)} passed"


# --- safetensors -------------------------------------------------------------------------------------------


def safetensors_file(header: object, data: bytes = b"", *, pad: int = 0) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += b" " * pad
    return struct.pack("<Q", len(text)) + text + data


def tensor(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_safetensors_written_by_the_library_through_numpy_pass(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    from safetensors.numpy import save_file

    tensors = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0, 4), dtype=np.float16),
        "mask": np.ones(3, dtype=bool),
        **{str(t): np.zeros(5, dtype=t) for t in ("float64", "int32", "int16", "int8", "uint8", "uint16")},
        **{str(t): np.zeros(2, dtype=t) for t in ("uint32", "uint64", "complex64")},
    }
    for metadata in (None, {"format": "np", "note": "ok"}):
        save_file(tensors, tmp_path / "m.safetensors", metadata=metadata)
        data = (tmp_path / "m.safetensors").read_bytes()
        assert run(check_safetensors, data) == []
        assert run(check_safetensors, data, seekable=False) == []
    save_file({}, tmp_path / "none.safetensors")
    assert run(check_safetensors, (tmp_path / "none.safetensors").read_bytes()) == []


def test_the_real_minilm_safetensors_passes_reading_only_its_header() -> None:
    path = minilm_folder() / "model.safetensors"
    size = path.stat().st_size
    with path.open("rb") as f:
        stream = Counting(f)
        assert check_safetensors("model.safetensors", stream, size) == []
    assert stream.bytes_read < 1 << 16  # the header, never the data


def test_safetensors_hand_written_pass_in_any_key_order_with_padding_and_sub_byte_dtypes() -> None:
    header = {
        "b": tensor("F16", [2], 8, 12),  # the JSON order need not follow the offsets
        "__metadata__": {"format": "pt"},
        "a": tensor("F32", [2], 0, 8),
        "f4": tensor("F4", [2, 3], 12, 15),  # 6 four-bit elements: 3 bytes
        "f6": tensor("F6_E2M3", [4], 15, 18),  # 4 six-bit elements: 3 bytes
        "z": tensor("I64", [3, 0], 18, 18),
    }
    assert run(check_safetensors, safetensors_file(header, bytes(18), pad=7)) == []
    assert run(check_safetensors, safetensors_file({"__metadata__": None})) == []


def test_safetensors_cut_anywhere_is_a_finding() -> None:
    every_cut_is_a_finding(check_safetensors, safetensors_file({"a": tensor("F32", [2], 0, 8)}, bytes(8)))


@pytest.mark.parametrize(
    ("header", "data", "needle"),
    [
        ({"a": tensor("F99", [2], 0, 8)}, 8, "unknown dtype 'F99'"),
        ({"a": tensor(["F32"], [2], 0, 8)}, 8, "unknown dtype"),
        ({"a": tensor("F32", [-2], 0, 8)}, 8, "not a list of non-negative integers"),
        ({"a": tensor("F32", [True, 2], 0, 8)}, 8, "not a list of non-negative integers"),
        ({"a": tensor("F32", [2.0], 0, 8)}, 8, "not a list of non-negative integers"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, 8, "not two non-negative integers"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, -8]}}, 8, "not two non-negative integers"),
        ({"a": {"dtype": "F32", "shape": [2]}}, 8, "has no data_offsets"),
        ({"a": [1, 2]}, 0, "tensor 'a' is a JSON list"),
        ({"a": tensor("F32", [3], 0, 8)}, 8, "has 8 bytes, its shape [3] of F32 needs 12"),
        ({"a": tensor("F32", [2], 8, 0)}, 8, "ends (byte 0) before it begins (byte 8)"),
        ({"a": tensor("F32", [4], 0, 16)}, 8, "ends at byte 16 of the data, which holds 8"),
        ({"a": tensor("F32", [2], 0, 8), "b": tensor("F32", [2], 4, 12)}, 12, "overlaps tensor 'a'"),
        (
            {"a": tensor("F32", [1], 0, 4), "b": tensor("F32", [1], 8, 12)},
            12,
            "bytes 4 to 8 of the data belong",
        ),
        ({"a": tensor("F32", [1], 4, 8)}, 8, "bytes 0 to 4 of the data belong to no tensor"),
        ({"a": tensor("F32", [2], 0, 8)}, 9, "the last 1 bytes of the file belong to no tensor"),
        ({"a": tensor("F4", [3], 0, 2)}, 2, "3 elements of F4 do not fill whole bytes"),
        ({"a": tensor("U8", [10**30, 10**30], 0, 8)}, 8, "fewer than its shape"),
        ({"__metadata__": {"k": 1}}, 0, "__metadata__ 'k' is a JSON int, not a string"),
        ({"__metadata__": ["k"]}, 0, "__metadata__ is a JSON list"),
    ],
)
def test_safetensors_defect_is_named(header: dict[str, object], data: int, needle: str) -> None:
    one(check_safetensors, safetensors_file(header, bytes(data)), needle)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', "repeats the key 'a'"),
        (
            b'{"a": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
            "repeats the key 'dtype'",
        ),
        (b'{"a": \xff}', "not UTF-8"),
        (b'{"a": ', "not valid JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"[" * 200_000, "nested deeper"),
        (b'{"a":' * 20 + b"1" + b"}" * 20, "nested deeper"),
        (
            b'{"a": {"dtype": "U8", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}',
            "not valid JSON",
        ),
    ],
)
def test_safetensors_bad_json_is_named(text: bytes, needle: str) -> None:
    one(check_safetensors, safetensors_file(text, bytes(4)), needle)


def test_safetensors_header_length_is_checked_before_anything_is_read() -> None:
    for length, needle in [
        (2**64 - 1, "over the limit"),
        (MAX_HEADER + 1, "over the limit"),
        (1000, "runs to byte 1008, past the end of the file (20 bytes)"),
    ]:
        stream = Counting(struct.pack("<Q", length) + b"{}" + bytes(10))
        details = [f.detail for f in check_safetensors("m.safetensors", stream, 20)]
        assert any(needle in d for d in details), details
        assert stream.bytes_read == 8
    one(
        check_safetensors,
        b"\x02\x00\x00",
        "the 8-byte header length runs to byte 8, past the end of the file (3 bytes)",
    )
    one(
        check_safetensors, struct.pack("<Q", 50) + b"{}", "ends early", size=100
    )  # the stream shorter than its record


def test_safetensors_findings_are_capped() -> None:
    header = {f"t{i}": tensor("F99", [1], 0, 0) for i in range(100)}
    details = run(check_safetensors, safetensors_file(header))
    assert len(details) == MAX_FINDINGS + 1 and details[-1] == "and 80 more problems like these"


@pytest.mark.e2e
def test_safetensors_written_by_torch_in_every_dtype_pass(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    names = ["float64", "float32", "float16", "bfloat16", "complex64", "bool"]
    names += [f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)]
    names += ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu"]
    tensors = {n: torch.zeros((2, 3)).to(getattr(torch, n)) for n in names if hasattr(torch, n)}
    if hasattr(torch, "float4_e2m1fn_x2"):  # two F4 values a byte: the header's shape is [2, 6]
        tensors["f4"] = torch.zeros((2, 3), dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    tensors |= {"scalar": torch.tensor(1.5), "empty": torch.zeros(0, 5)}
    save_file(tensors, tmp_path / "all.safetensors", metadata={"format": "pt"})
    data = (tmp_path / "all.safetensors").read_bytes()
    assert b'"F4"' in data or not hasattr(torch, "float4_e2m1fn_x2")
    assert run(check_safetensors, data) == []


# --- GGUF ----------------------------------------------------------------------------------------------------

U8, U32, F32, BOOL, STRING, ARRAY, U64 = 0, 4, 6, 7, 8, 9, 10


class Gguf:
    """A GGUF file written field by field (version 2 and 3: 64-bit counts; version 1: 32-bit)."""

    def __init__(self, version: int = 3) -> None:
        self.version = version
        self.kvs: list[bytes] = []
        self.infos: list[bytes] = []
        self.n = "<Q" if version >= 2 else "<I"

    def string(self, text: str | bytes) -> bytes:
        raw = text.encode() if isinstance(text, str) else text
        return struct.pack(self.n, len(raw)) + raw

    def kv(self, key: str | bytes, kind: int, value: bytes) -> Gguf:
        self.kvs.append(self.string(key) + struct.pack("<I", kind) + value)
        return self

    def array(self, item: int, count: int, items: bytes) -> bytes:
        return struct.pack("<I", item) + struct.pack(self.n, count) + items

    def tensor(self, name: str | bytes, dims: list[int], kind: int, offset: int) -> Gguf:
        packed = b"".join(struct.pack(self.n, d) for d in dims)
        self.infos.append(
            self.string(name) + struct.pack("<I", len(dims)) + packed + struct.pack("<IQ", kind, offset)
        )
        return self

    def bytes(self, data: int = 0, *, alignment: int = 32) -> bytes:
        head = b"GGUF" + struct.pack("<I", self.version)
        head += struct.pack(self.n, len(self.infos)) + struct.pack(self.n, len(self.kvs))
        head += b"".join(self.kvs) + b"".join(self.infos)
        return head + bytes(-len(head) % alignment) + bytes(data)


def benign_gguf(version: int = 3) -> Gguf:
    g = Gguf(version)
    g.kv("general.architecture", STRING, g.string("llama"))
    g.kv("general.alignment", U32, struct.pack("<I", 32))
    g.kv("tokenizer.ggml.tokens", ARRAY, g.array(STRING, 3, b"".join(g.string(t) for t in ("<s>", "a", "b"))))
    g.kv("tokenizer.ggml.scores", ARRAY, g.array(F32, 3, bytes(12)))
    g.kv("nested", ARRAY, g.array(ARRAY, 2, g.array(U8, 2, b"\x01\x02") + g.array(BOOL, 1, b"\x01")))
    g.kv("general.file_type", U32, struct.pack("<I", 1)).kv("count", U64, struct.pack("<Q", 7))
    g.tensor("token_embd.weight", [4, 2], 0, 0)  # F32: 32 bytes at 0
    g.tensor("blk.0.attn_q.weight", [64], 2, 32)  # Q4_0: two blocks of 18 bytes at 32
    g.tensor("output_norm.weight", [3], 1, 96)  # F16: 6 bytes at 96 (68 aligned up)
    return g


@pytest.mark.parametrize("version", [1, 2, 3])
def test_gguf_that_holds_together_passes(version: int) -> None:
    data = benign_gguf(version).bytes(102)
    assert run(check_gguf, data) == []
    assert run(check_gguf, data, seekable=False) == []
    assert run(check_gguf, Gguf(version).bytes()) == []  # no metadata, no tensors


def test_gguf_cut_anywhere_in_the_header_is_a_finding() -> None:
    data = benign_gguf().bytes(102)
    assert run(check_gguf, data) == []
    for cut in range(len(data)):
        assert run(check_gguf, data[:cut]), f"cut at {cut} passed"


def gguf_with(**changes: Callable[[Gguf], object]) -> bytes:
    g = benign_gguf()
    for change in changes.values():
        change(g)
    return g.bytes(102)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"GGML" + bytes(60), "does not begin with the GGUF magic"),
        (b"GGUF" + struct.pack("<I", 4) + bytes(60), "unknown GGUF version 4"),
        (b"GGUF" + struct.pack("<IQQ", 3, 2**62, 0) + bytes(60), "claims 4611686018427387904 tensors"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**64 - 1) + bytes(60), "metadata entries, more than the file"),
        (b"GGUF" + struct.pack("<IQQ", 3, 2, 2) + bytes(50), "cannot fit in the file"),
        (Gguf().kv("k", 13, b"").bytes(), "metadata 'k' has unknown type 13"),
        (Gguf().kv("k", STRING, struct.pack("<Q", 2**63)).bytes(), "past the end of the file"),
        (Gguf().kv("k", ARRAY, struct.pack("<IQ", U32, 2**61)).bytes(), "claims 2305843009213693952 items"),
        (Gguf().kv("k", ARRAY, struct.pack("<IQ", 77, 1)).bytes(), "an array of unknown type 77"),
        (
            Gguf().kv("k", ARRAY, struct.pack("<IQ", ARRAY, 1) * 20 + struct.pack("<IQ", U8, 0)).bytes(),
            "deeper than 8",
        ),
        (Gguf().kv("k", U8, b"\x01").kv("k", U8, b"\x02").bytes(), "the metadata key 'k' appears twice"),
        (Gguf().kv("general.alignment", U32, struct.pack("<I", 48)).bytes(), "48, not a power of two"),
        (Gguf().kv("general.alignment", U64, struct.pack("<Q", 32)).bytes(), "not uint32"),
        (Gguf().kv(b"k\xff", U8, b"\x01").bytes(), "the metadata key 'k\ufffd' is not UTF-8 text"),
        (
            gguf_with(t=lambda g: g.tensor("token_embd.weight", [1], 0, 128)),
            "'token_embd.weight' appears twice",
        ),
        (gguf_with(t=lambda g: g.tensor(b"t\xc3", [1], 0, 128)), "the tensor name 't\ufffd' is not UTF-8"),
        (gguf_with(t=lambda g: g.tensor("x" * 64, [1], 0, 128)), "64 bytes long, over ggml's limit of 63"),
        (gguf_with(t=lambda g: g.tensor("t", [1] * 5, 0, 128)), "tensor 't' has 5 dimensions, more than 4"),
        (gguf_with(t=lambda g: g.tensor("t", [1], 4, 128)), "tensor 't' has unknown ggml type 4"),
        (gguf_with(t=lambda g: g.tensor("t", [33], 2, 128)), "rows of 33 are not whole Q4_0 blocks of 32"),
        (gguf_with(t=lambda g: g.tensor("t", [2**63], 0, 128)), "past what ggml counts"),
        (gguf_with(t=lambda g: g.tensor("t", [2**32, 2**32], 0, 128)), "past what ggml counts"),
        (gguf_with(t=lambda g: g.tensor("t", [1], 0, 112)), "offset 112, not a multiple of the alignment 32"),
        (gguf_with(t=lambda g: g.tensor("t", [1000], 0, 128)), "past the end of the file"),
        (gguf_with(t=lambda g: g.tensor("t", [1], 0, 32)), "(data at 32 to 68) overlaps tensor 't'"),
    ],
)
def test_gguf_defect_is_named(data: bytes, needle: str) -> None:
    one(check_gguf, data, needle)
    one(check_gguf, data, needle, seekable=False)


def test_gguf_huge_counts_and_lengths_are_findings_before_any_read() -> None:
    for data in (
        b"GGUF" + struct.pack("<IQQ", 3, 2**64 - 1, 2**64 - 1),
        Gguf().kv("k", STRING, struct.pack("<Q", 2**64 - 1)).bytes(),
        Gguf().kv("k", ARRAY, struct.pack("<IQ", STRING, 2**64 - 1)).bytes(),
    ):
        stream = Counting(data + bytes(1 << 20), seekable=False)
        assert check_gguf("m.gguf", stream, len(data) + (1 << 20))
        assert stream.bytes_read < 200
    # Counts that fit in a (declared) huge file but are past what the check walks: refused, unread.
    for data, needle in (
        (b"GGUF" + struct.pack("<IQQ", 3, MAX_TENSORS + 1, 0), "more than this check reads"),
        (Gguf().kv("k", ARRAY, struct.pack("<IQ", STRING, MAX_ITEMS + 1)).bytes(), f"more than {MAX_ITEMS}"),
    ):
        stream = Counting(data, seekable=False)
        details = [f.detail for f in check_gguf("m.gguf", stream, 1 << 40)]
        assert any(needle in d for d in details), details
        assert stream.bytes_read <= len(data)


# --- ONNX ----------------------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, value: int | bytes, wire: int | None = None) -> bytes:
    """A protobuf field: a varint for an int, length-delimited for bytes (or the wire type given, raw)."""
    if wire is not None:
        return varint(number << 3 | wire) + (value if isinstance(value, bytes) else varint(value))
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def opset(domain: bytes = b"", version: int = 17) -> bytes:
    return field(8, field(1, domain) + field(2, version))


GRAPH = field(7, field(1, b"node") + field(2, b"main") + field(5, b"initializer" * 10))
MODEL = field(1, 9) + field(2, b"pytorch") + field(3, b"2.13") + GRAPH + opset() + opset(b"ai.onnx.ml", 3)


def test_onnx_model_that_holds_together_passes() -> None:
    assert run(check_onnx, MODEL) == []
    assert run(check_onnx, MODEL, seekable=False) == []
    external = field(5, field(1, b"location") + field(2, b"weights.bin"))  # a TensorProto's external data
    assert run(check_onnx, field(1, 10) + field(7, external) + opset() + field(14, field(1, b"k"))) == []
    assert (
        run(
            check_onnx,
            field(1, 8) + field(21, bytes(4), wire=5) + field(22, bytes(8), wire=1) + GRAPH + opset(),
        )
        == []
    )


def test_onnx_cut_anywhere_is_a_finding() -> None:
    every_cut_is_a_finding(check_onnx, field(1, 9) + GRAPH + opset(b"ai.onnx"))  # the last field required


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (GRAPH + opset(), "the model has no ir_version (field 1)"),
        (field(1, 9) + opset(), "the model has no graph (field 7)"),
        (field(1, 9) + GRAPH, "the model has no opset_import (field 8)"),
        (field(1, 0) + GRAPH + opset(), "ir_version is 0"),
        (field(1, 1000) + GRAPH + opset(), "ir_version is 1000"),
        (field(1, b"9") + GRAPH + opset(), "the ir_version (field 1) has wire type 2, not 0"),
        (field(1, 9) + field(7, 5) + opset(), "the graph (field 7) has wire type 0, not 2"),
        (MODEL + b"\x00", "field number 0"),
        (MODEL + field(9, b"", wire=3), "wire type 3"),
        (MODEL + field(9, b"", wire=7), "wire type 7"),
        (MODEL + b"\xff" * 11, "longer than 10 bytes"),
        (MODEL + varint(9 << 3) + b"\xff" * 9 + b"\x7f", "over 64 bits"),
        (MODEL + varint(9 << 3 | 2) + varint(2**40), "past the end of the file"),
        (
            field(1, 9) + varint(7 << 3 | 2) + varint(2**63) + opset(),
            "the graph (field 7) of 9223372036854775808 bytes runs to byte 9223372036854775821, past the end",
        ),
        (field(1, 9) + GRAPH + opset(b"\xff\xfe"), "opset_import domain is not UTF-8"),
        (field(1, 9) + GRAPH + field(8, b"\x12"), "an opset_import entry is not protobuf"),
        (field(1, 9) + GRAPH + field(8, field(2, b"17")), "field 2 has wire type 2"),
        (b"\x89PNG\r\n\x1a\n" + bytes(32), "not protobuf"),
    ],
)
def test_onnx_defect_is_named(data: bytes, needle: str) -> None:
    one(check_onnx, data, needle)


class ReadOnly:
    """A stream with nothing but `read` (as a bucket's object reader or a bundle's inflating stream)."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self.inner.read(n)


@pytest.mark.parametrize(
    ("check", "data"),
    [
        (check_safetensors, safetensors_file({"a": tensor("F32", [2], 0, 8)}, bytes(8))),
        (check_gguf, benign_gguf().bytes(102)),
        (check_onnx, MODEL),
    ],
)
def test_a_stream_that_only_reads_is_read_and_discarded(check: Check, data: bytes) -> None:
    assert check("f", ReadOnly(data), len(data)) == []
    assert check(
        "f", ReadOnly(data[:20]), len(data)
    )  # the stream ends in the header, before its recorded size


def test_onnx_with_endless_top_level_fields_is_refused_at_the_bound() -> None:
    one(check_onnx, field(1, 9) * (MAX_FIELDS + 10), f"more than {MAX_FIELDS} top-level fields")


def test_onnx_skips_a_large_graph_without_reading_it_when_it_can_seek() -> None:
    big = field(1, 9) + field(7, bytes(8 << 20)) + opset()
    seeking = Counting(big)
    assert check_onnx("m.onnx", seeking, len(big)) == []
    assert seeking.bytes_read < 100
    streaming = Counting(big, seekable=False)
    assert check_onnx("m.onnx", streaming, len(big)) == []
    assert streaming.bytes_read == len(big)  # read and discarded, in chunks


@pytest.mark.e2e
def test_onnx_model_exported_by_torch_passes(tmp_path: Path) -> None:
    import torch  # torch.onnx.export needs the onnx package too (a test dependency)

    torch.onnx.export(torch.nn.Linear(3, 2), (torch.zeros(1, 3),), str(tmp_path / "m.onnx"), dynamo=False)
    assert run(check_onnx, (tmp_path / "m.onnx").read_bytes()) == []


# --- the table -----------------------------------------------------------------------------------------------


def test_the_table_picks_the_check_by_suffix() -> None:
    assert header_check("a/model.safetensors") is check_safetensors
    assert header_check("model-Q4_K_M.GGUF") is check_gguf
    assert header_check("onnx/model.onnx") is check_onnx
    assert header_check("model.safetensors.index.json") is None and header_check("pytorch_model.bin") is None
    assert scan_file(ScanFile("config.json", 2, lambda: io.BytesIO(b"{}"))) == []
    assert scan_file(ScanFile("m.onnx", 0, lambda: io.BytesIO(b""))) == [
        Finding("m.onnx", "invalid", d)
        for d in (
            "the model has no ir_version (field 1)",
            "the model has no graph (field 7)",
            "the model has no opset_import (field 8)",
        )
    ]
