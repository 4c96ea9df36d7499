"""Pickle-based files (torch checkpoints, pickles, joblib, .npy/.npz): the globals they would import,
judged against an allowlist, deny by default; nothing is ever unpickled (README "Pickle-based files").

`is_pickle_based(path)` says which repo files are judged here; `check_pickled(path, stream, size)` returns
a finding per global outside ALLOWED and per thing that could not be judged, [] only when every pickle
in the file imports only allowed globals. Containers understood: a zip (torch.save's default, .npz),
torch's legacy format (pickles back to back, then raw storages), .npy (a pickle only for object
arrays), a bare pickle (protocols 0 to 5); a tar (torch's oldest format) is flagged, not judged. The
stream must be seekable (a store's blob is a file: a zip is read through its directory, and the first
block is peeked); pickles are read as consumed.
"""

from __future__ import annotations

import ast
import tarfile
import zipfile
from typing import BinaryIO, Final

from mirror.validate.findings import Finding
from mirror.validate.pickle_walk import Reader, Walk, walk

SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".npy", ".npz", ".pth.tar")

# What torch's `weights_only` unpickler accepts for plain state dicts, copied as data from
# torch/_weights_only_unpickler.py `_get_allowed_globals()` (with `_tensor_rebuild_functions()`, the
# storage and tensor classes, dtypes and quantization schemes it lists) in torch 2.13.0. Python 2 names
# of three builtins it accepts are added: torch.save writes protocol 2, where a set is `__builtin__.set`
# and the unpickler maps it to `builtins.set` (tests check every name here maps to a name here). Nothing
# from numpy, joblib, os, subprocess, builtins.getattr/eval/exec, importlib, runpy or pickle is here.
_TORCH_WEIGHTS_ONLY = """
_codecs.encode builtins.bytearray builtins.complex builtins.set collections.Counter
collections.OrderedDict torch.BFloat16Storage torch.BFloat16Tensor torch.BoolStorage torch.BoolTensor
torch.ByteStorage torch.ByteTensor torch.CharStorage torch.CharTensor torch.ComplexDoubleStorage
torch.ComplexFloatStorage torch.DoubleStorage torch.DoubleTensor torch.FloatStorage torch.FloatTensor
torch.HalfStorage torch.HalfTensor torch.IntStorage torch.IntTensor torch.LongStorage torch.LongTensor
torch.QInt32Storage torch.QInt8Storage torch.QUInt2x4Storage torch.QUInt4x2Storage torch.QUInt8Storage
torch.ShortStorage torch.ShortTensor torch.Size torch.Tensor torch._tensor._rebuild_from_type_v2
torch._utils._rebuild_device_tensor_from_cpu_tensor torch._utils._rebuild_device_tensor_from_numpy
torch._utils._rebuild_meta_tensor_no_storage torch._utils._rebuild_nested_tensor
torch._utils._rebuild_parameter torch._utils._rebuild_parameter_with_state torch._utils._rebuild_qtensor
torch._utils._rebuild_sparse_tensor torch._utils._rebuild_tensor torch._utils._rebuild_tensor_v2
torch._utils._rebuild_tensor_v3 torch._utils._rebuild_wrapper_subclass torch.bfloat16 torch.bits16
torch.bits1x8 torch.bits2x4 torch.bits4x2 torch.bits8 torch.bool torch.complex128 torch.complex32
torch.complex64 torch.cuda.BFloat16Storage torch.cuda.BFloat16Tensor torch.cuda.BoolStorage
torch.cuda.BoolTensor torch.cuda.ByteStorage torch.cuda.ByteTensor torch.cuda.CharStorage
torch.cuda.CharTensor torch.cuda.ComplexDoubleStorage torch.cuda.ComplexFloatStorage
torch.cuda.DoubleStorage torch.cuda.DoubleTensor torch.cuda.FloatStorage torch.cuda.FloatTensor
torch.cuda.HalfStorage torch.cuda.HalfTensor torch.cuda.IntStorage torch.cuda.IntTensor
torch.cuda.LongStorage torch.cuda.LongTensor torch.cuda.ShortStorage torch.cuda.ShortTensor
torch.cuda.sparse.BFloat16Tensor torch.cuda.sparse.ByteTensor torch.cuda.sparse.CharTensor
torch.cuda.sparse.DoubleTensor torch.cuda.sparse.FloatTensor torch.cuda.sparse.HalfTensor
torch.cuda.sparse.IntTensor torch.cuda.sparse.LongTensor torch.cuda.sparse.ShortTensor torch.device
torch.float16 torch.float32 torch.float4_e2m1fn_x2 torch.float64 torch.float8_e4m3fn
torch.float8_e4m3fnuz torch.float8_e5m2 torch.float8_e5m2fnuz torch.float8_e8m0fnu torch.int1
torch.int16 torch.int2 torch.int3 torch.int32 torch.int4 torch.int5 torch.int6 torch.int64 torch.int7
torch.int8 torch.nn.parameter.Parameter torch.per_channel_affine torch.per_channel_affine_float_qparams
torch.per_channel_symmetric torch.per_tensor_affine torch.per_tensor_symmetric torch.qint32 torch.qint8
torch.quint2x4 torch.quint4x2 torch.quint8 torch.serialization._get_layout torch.sparse.BFloat16Tensor
torch.sparse.ByteTensor torch.sparse.CharTensor torch.sparse.DoubleTensor torch.sparse.FloatTensor
torch.sparse.HalfTensor torch.sparse.IntTensor torch.sparse.LongTensor torch.sparse.ShortTensor
torch.storage.TypedStorage torch.storage.UntypedStorage torch.uint1 torch.uint16 torch.uint2 torch.uint3
torch.uint32 torch.uint4 torch.uint5 torch.uint6 torch.uint64 torch.uint7 torch.uint8
"""
ALLOWED: frozenset[str] = frozenset(
    [*_TORCH_WEIGHTS_ONLY.split(), "__builtin__.bytearray", "__builtin__.complex", "__builtin__.set"]
)

KIND: Final = "pickle"
_ZIP = b"PK\x03\x04"
_EMPTY_ZIP = b"PK\x05\x06"
_NPY = b"\x93NUMPY"
# torch.save(_use_new_zipfile_serialization=False) opens with this pickle: its magic number (a long).
_LEGACY_TORCH = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_LEGACY_PICKLES = 5  # magic number, protocol version, sys info, the object, the storage keys
_MAX_NPY_HEADER = 1 << 16


def is_pickle_based(path: str) -> bool:
    """Whether the repo file at `path` is judged by `check_pickled` (its name's suffix)."""
    return path.lower().endswith(SUFFIXES)


def check_pickled(path: str, stream: BinaryIO, size: int) -> list[Finding]:
    """Findings for the pickle-based file `path` (`size` bytes from the stream's position)."""
    details = _judge(stream, size)
    return [Finding(path, KIND, detail) for detail in details]


def _judge(stream: BinaryIO, size: int) -> list[str]:
    head = _peek(stream, 512)
    if _is_tar(head):  # torch.load tries a tar first (its oldest format) and unpickles its members
        return ["a tar archive (torch's oldest checkpoint format): not judged"]
    if head.startswith((_ZIP, _EMPTY_ZIP)):
        return _judge_zip(stream)
    if head.startswith(_NPY):
        return _judge_npy(Reader(stream, size))
    reader = Reader(stream, size)
    if head.startswith(_LEGACY_TORCH):
        return _judge_pickles(reader, _LEGACY_PICKLES)
    return _judge_pickles(reader, None, raw_ok=head[:1] != b"\x80" or head[1:2] > b"\x05")


def _is_tar(head: bytes) -> bool:
    """Whether the first block is a tar header, as tarfile (and so torch.load) reads one: its checksum."""
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return True


def _peek(stream: BinaryIO, n: int) -> bytes:
    start = stream.tell()
    data = stream.read(n)
    stream.seek(start)
    return data


def _judge_pickles(reader: Reader, count: int | None, *, raw_ok: bool = False) -> list[str]:
    """The pickles back to back at the reader: `count` of them (then raw data), or as many as open with
    PROTO (bytes after the last, neither pickle.load nor torch.load reads).

    `raw_ok`: bytes that do not open with PROTO and that the unpickler refuses before importing anything
    (raw weights in a .bin, say) are not a pickle and give no finding: loading them runs nothing.
    """
    details: list[str] = []
    walked = 0
    while reader.left > 0 and (count is None or walked < count):
        one = walk(reader)
        details += _details(one)
        walked += 1
        if one.end is None:
            if walked == 1 and raw_ok and one.refused:
                return []
            details.append(_stopped(one))
            return details
        if count is None and _peek(reader.stream, 1) != b"\x80":
            return details
    if count is not None and walked < count:
        details.append(f"a legacy torch file ends after {walked} of its {count} pickles")
    return details


def _details(one: Walk) -> list[str]:
    """A walk's findings: its globals outside ALLOWED, what it could not judge, its nested pickles'."""
    details = [f"imports {name}" for name in one.imports if name not in ALLOWED] + one.problems
    for pos, inner in one.nested:
        inner_details = _details(inner) + ([] if inner.end is not None else [_stopped(inner)])
        details += [f"nested pickle at byte {pos}: {d}" for d in inner_details]
    return details


def _stopped(one: Walk) -> str:
    detail = one.stopped or "pickle unreadable"
    if one.truncated or one.joblib_arrays or detail.startswith("not a pickle"):
        return detail
    return f"pickle not judged: {detail}"


def _judge_npy(reader: Reader) -> list[str]:
    """A .npy: its header, and the pickle after it when the array holds Python objects."""
    try:
        major = reader.read(8)[6]
        width = 2 if major == 1 else 4
        length = int.from_bytes(reader.read(width), "little")
        if length > _MAX_NPY_HEADER:
            return [f"not a .npy: a header of {length} bytes"]
        header = ast.literal_eval(reader.read(length).decode("latin-1"))
        objects = _holds_objects(header["descr"])
    except Exception as exc:  # noqa: BLE001 - hostile input of any shape (deep nesting too): a finding
        return [f"not a .npy: its header is unreadable ({type(exc).__name__})"]
    if not objects:
        return []
    return _judge_pickles(reader, 1) or ["an object array (pickled)"]


def _holds_objects(descr: object) -> bool:
    """Whether a .npy dtype description holds Python objects ('O'); unknown shapes count as objects."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(not isinstance(f, tuple) or len(f) < 2 or _holds_objects(f[1]) for f in descr)
    if isinstance(descr, tuple) and descr:
        return _holds_objects(descr[0])
    return True


def _judge_zip(stream: BinaryIO) -> list[str]:
    """A zip (a torch checkpoint, an .npz): every .pkl and .npy member, and any member that is a pickle."""
    details: list[str] = []
    try:
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    details += [f"{info.filename}: {d}" for d in _judge_member(archive, info)]
    except Exception as exc:  # noqa: BLE001 - zipfile raises many kinds on a hostile archive: a finding
        details.append(f"not a readable zip ({exc})")
    return details


def _judge_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> list[str]:
    name = info.filename.lower()
    try:
        with archive.open(info) as member:
            reader = Reader(member, info.file_size)  # type: ignore[arg-type]
            if name.endswith(".npy"):
                return _judge_npy(reader)
            if name.endswith((".pkl", ".pickle")):
                return _judge_pickles(reader, None)
            if member.read(1) != b"\x80":
                return []  # raw data (a storage): torch reads it as bytes, never unpickles it
        with archive.open(info) as member:
            one = walk(Reader(member, info.file_size))  # type: ignore[arg-type]
            if one.end is None:
                return []  # opens like a pickle but is not one: raw bytes
            return [f"nested pickle {d}" for d in _details(one)]
    except Exception as exc:  # noqa: BLE001 - an encrypted, oddly compressed or damaged member: a finding
        return [f"cannot be read ({exc})"]
