"""mirror.validate.pickles: the globals pickle-based files import, against the allowlist, never loaded."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import posix
import random
import struct
import tarfile
import zipfile
from pathlib import Path

import joblib
import numpy
import pytest

from mirror.validate import pickle_walk
from mirror.validate.findings import Finding
from mirror.validate.pickles import ALLOWED, check_pickled, is_pickle_based

SYSTEM = "imports posix.system"  # os.system is posix.system (the fast tier replaces os.system itself)


class Evil:
    def __reduce__(self) -> tuple[object, ...]:
        return (posix.system, ("echo x",))


class Nested:
    def __reduce__(self) -> tuple[object, ...]:
        return (pickle.loads, (pickle.dumps(Evil(), protocol=4),))


def details(data: bytes, path: str = "model.bin") -> list[str]:
    findings = check_pickled(path, io.BytesIO(data), len(data))
    assert all(f.path == path and f.kind == "pickle" for f in findings)
    return [f.detail for f in findings]


def torch_like_zip(members: dict[str, bytes]) -> bytes:
    """A zip laid out as torch.save writes it (archive/data.pkl, archive/data/<n>, byteorder, version)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


# A protocol 2 state dict as torch.save writes it: an OrderedDict holding one float tensor.
STATE_DICT = (
    b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2"
    b"\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00"
    b"\x00cpuq\x07K\x02tq\x08QK\x00K\x02\x85q\tK\x01\x85q\n\x89h\x00)Rq\x0btq\x0cRq\rs."
)


def test_a_state_dict_pickle_and_its_torch_zip_have_no_findings() -> None:
    assert details(STATE_DICT) == []
    raw = struct.pack("<2f", 1.0, 2.0)
    members = {"archive/data.pkl": STATE_DICT, "archive/data/0": raw, "archive/byteorder": b"little"}
    assert details(torch_like_zip(members | {"archive/version": b"3\n"})) == []


@pytest.mark.parametrize("protocol", range(6))
def test_a_reduce_to_os_system_is_named_at_every_protocol(protocol: int) -> None:
    assert details(pickle.dumps({"a": Evil()}, protocol=protocol)) == [SYSTEM]


def test_a_getattr_based_call_names_getattr_and_import() -> None:
    data = b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(S'os'\ntRS'system'\ntR(S'echo x'\ntR."
    assert details(data) == ["imports builtins.getattr", "imports builtins.__import__"]


def test_a_nested_pickle_names_the_outer_and_the_inner_global() -> None:
    found = details(pickle.dumps(Nested(), protocol=4))
    assert found[0] == f"imports {pickle.loads.__module__}.loads"
    assert found[1].startswith("nested pickle at byte ") and found[1].endswith(SYSTEM)


def test_inside_a_torch_zip_checkpoint_data_pkl_replaced() -> None:
    evil = pickle.dumps(Evil(), protocol=2)
    members = {"archive/data.pkl": evil, "archive/data/0": b"\0" * 8, "archive/version": b"3\n"}
    assert details(torch_like_zip(members)) == [f"archive/data.pkl: {SYSTEM}"]


def test_a_zip_member_that_is_itself_a_pickle_is_judged() -> None:
    members = {"archive/data.pkl": STATE_DICT, "archive/data/0": pickle.dumps(Evil(), protocol=2)}
    assert details(torch_like_zip(members)) == [f"archive/data/0: nested pickle {SYSTEM}"]


def test_a_storage_that_opens_like_a_pickle_is_raw_data() -> None:
    members = {"archive/data.pkl": STATE_DICT, "archive/data/0": b"\x80\x02" + b"\xff" * 30}
    assert details(torch_like_zip(members)) == []


def test_npy_of_floats_and_npz_have_no_findings() -> None:
    out = io.BytesIO()
    numpy.save(out, numpy.arange(12, dtype=numpy.float32).reshape(3, 4))
    assert details(out.getvalue(), "a.npy") == []
    out = io.BytesIO()
    numpy.savez(out, a=numpy.zeros(3), b=numpy.ones((2, 2), dtype=numpy.int8))
    assert details(out.getvalue(), "a.npz") == []


def test_an_object_array_in_npy_and_npz_is_scanned() -> None:
    out = io.BytesIO()
    numpy.save(out, numpy.array([Evil(), 1], dtype=object), allow_pickle=True)
    assert SYSTEM in details(out.getvalue(), "a.npy")
    out = io.BytesIO()
    numpy.savez(out, x=numpy.array([Evil()], dtype=object))
    assert f"x.npy: {SYSTEM}" in details(out.getvalue(), "a.npz")


def test_joblib_arrays_are_named_and_the_limit_said() -> None:
    out = io.BytesIO()
    joblib.dump({"a": numpy.zeros(4, dtype=numpy.float32)}, out)
    found = details(out.getvalue(), "m.joblib")
    assert "imports joblib.numpy_pickle.NumpyArrayWrapper" in found
    assert found[-1].startswith("joblib array data inline after byte ")


def test_stack_global_with_memoized_names() -> None:
    data = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x940h\x00h\x01\x93\x8c\x06echo x\x85R."
    assert details(data) == ["imports os.system"]


def test_a_global_computed_at_load_time() -> None:
    # the module name is the result of a call (_codecs.encode, allowed): it cannot be known statically
    data = b"\x80\x04\x8c\x07_codecs\x8c\x06encode\x93\x8c\x02os\x85R\x8c\x06system\x93)R."
    assert details(data) == ["imports a global computed at load time (at byte 34)"]


def test_inst_and_obj() -> None:
    assert details(b"(S'echo x'\nios\nsystem\n.") == ["imports os.system"]
    assert details(b"(cos\nsystem\nS'echo x'\no.") == ["imports os.system"]


def test_ext_opcodes_are_findings() -> None:
    assert details(b"\x80\x02\x82\x05)R.") == ["uses the extension registry (EXT1 code 5 at byte 2)"]
    assert details(b"\x80\x02\x83\x05\x01.")[0].startswith("uses the extension registry (EXT2 code 261")


def test_protocol_5_out_of_band_buffers_have_no_findings() -> None:
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(pickle.PickleBuffer(b"abc"), protocol=5, buffer_callback=buffers.append)
    assert b"\x97" in data and details(data) == []


def test_truncated_and_garbage_pickles() -> None:
    assert details(STATE_DICT[:60]) == ["pickle truncated at byte 60"]
    assert details(b"\x80\x02\xff\xff") == ["not a pickle: unknown opcode 0xff at byte 2"]
    assert details(b"\x80\x02t.") == ["not a pickle: TUPLE without a MARK at byte 2"]


def test_raw_bytes_under_a_pickle_suffix_are_not_a_false_alarm() -> None:
    weights = numpy.linspace(-1, 1, 4096, dtype=numpy.float32).tobytes()
    assert details(weights) == []
    assert details(b"\xff" * 100) == []
    assert details(b"") == []


def test_raw_bytes_that_import_before_failing_are_flagged() -> None:
    assert details(b"cos\nsystem\n\xff") == [
        "imports os.system",
        "not a pickle: unknown opcode 0xff at byte 11",
    ]


def test_deep_nesting_and_a_huge_memo_give_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pickle_walk, "MAX_STACK", 1000)
    monkeypatch.setattr(pickle_walk, "MAX_MEMO", 1000)
    monkeypatch.setattr(pickle_walk, "MAX_OPCODES", 5000)
    assert details(b"\x80\x02" + b"(" * 2000 + b".") == [
        "pickle not judged: stack deeper than 1,000 at byte 1002"
    ]
    memo = b"\x80\x02N" + b"".join(b"r" + struct.pack("<I", i) for i in range(2000)) + b"."
    assert details(memo) == ["pickle not judged: memo larger than 1,000 entries at byte 5003"]
    loop = b"\x80\x02" + b"N0" * 4000 + b"N."
    assert details(loop) == ["pickle not judged: more than 5,000 opcodes at byte 5001"]


def test_a_huge_length_prefix_is_not_read_into_memory() -> None:
    data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"x" * 10
    assert details(data) == ["pickle truncated at byte 21"]


def test_a_line_without_end_is_bounded() -> None:
    data = b"c" + b"a" * (pickle_walk.MAX_LINE + 10) + b"\n"
    assert details(data) == [f"pickle not judged: a line longer than {pickle_walk.MAX_LINE} bytes at byte 1"]


def test_a_tar_which_torch_load_would_unpickle_is_a_finding() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("pickle")
        info.size = len(STATE_DICT)
        archive.addfile(info, io.BytesIO(STATE_DICT))
    assert details(out.getvalue()) == ["a tar archive (torch's oldest checkpoint format): not judged"]


def test_a_npy_header_nested_without_end_is_a_finding() -> None:
    header = b"{'descr': " + b"[" * 5000 + b"]" * 5000 + b", 'fortran_order': False, 'shape': (1,), }\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
    assert details(data, "a.npy")[0].startswith("not a .npy: its header is unreadable")


def test_damaged_files_give_findings_never_an_exception() -> None:
    """Seeded mutations of each kind of file: every one judged, none raising."""
    out = io.BytesIO()
    numpy.save(out, numpy.array([1, "x"], dtype=object), allow_pickle=True)
    seeds = [
        out.getvalue(),
        STATE_DICT,
        torch_like_zip({"archive/data.pkl": STATE_DICT, "archive/data/0": b"\0" * 8}),
        pickle.dumps({"a": [1, 2.0, "x", b"y", (1,), {1}, frozenset()], "b": bytearray(b"z")}, protocol=5),
        pickle.dumps({"a": [1, 2.0, "x", b"y", (1,)]}, protocol=0),
    ]
    rng = random.Random(15)
    for _ in range(2000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            data[at : at + rng.randint(0, 3)] = rng.randbytes(rng.randint(0, 3))
        assert isinstance(details(bytes(data)), list)


def test_a_damaged_zip_is_a_finding() -> None:
    data = torch_like_zip({"archive/data.pkl": STATE_DICT})
    assert details(data[: len(data) - 30])[0].startswith("not a readable zip")


def test_every_allowed_name_maps_to_an_allowed_name() -> None:
    """The unpickler renames Python 2 globals (protocol < 3): no allowed name becomes another one."""
    for name in ALLOWED:
        module, _, attr = name.rpartition(".")
        mapped = _compat_pickle.NAME_MAPPING.get((module, attr))
        module = mapped[0] if mapped else _compat_pickle.IMPORT_MAPPING.get(module, module)
        attr = mapped[1] if mapped else attr
        assert f"{module}.{attr}" in ALLOWED, name
    assert not {n for n in ALLOWED if n.split(".")[0] in ("os", "posix", "nt", "subprocess", "pickle")}
    assert "builtins.getattr" not in ALLOWED and "__builtin__.eval" not in ALLOWED


def test_which_paths_are_pickle_based() -> None:
    for path in ("pytorch_model.bin", "a/b.PT", "x.pth", "x.ckpt", "x.pkl", "m.joblib", "a.npy", "b.npz"):
        assert is_pickle_based(path), path
    for path in ("model.safetensors", "config.json", "model.h5", "model.onnx", "x.gguf"):
        assert not is_pickle_based(path), path


@pytest.mark.e2e
def test_real_torch_checkpoints_zip_and_legacy() -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    objects = {
        "state_dict": model.state_dict(),
        "tensors": {"w": torch.zeros(2, 3), "i": torch.arange(4), "h": torch.ones(2, dtype=torch.float16)},
        "odd": {"s": {1, 2}, "b": b"xy", "c": 1j, "dt": torch.float16, "sz": torch.Size([2])},
    }
    for obj in objects.values():
        for zipped in (True, False):
            out = io.BytesIO()
            torch.save(obj, out, _use_new_zipfile_serialization=zipped)
            assert details(out.getvalue()) == []
    for zipped in (True, False):
        out = io.BytesIO()
        torch.save({"w": torch.zeros(2), "x": Evil()}, out, _use_new_zipfile_serialization=zipped)
        found = details(out.getvalue())
        assert found and found[0].endswith(SYSTEM)


@pytest.mark.e2e
def test_minilm_saved_as_pytorch_model_bin_has_no_findings(tmp_path: Path) -> None:
    """The real MiniLM weights, written as transformers 4 wrote a pytorch_model.bin (torch.save of the state
    dict; the installed transformers 5 writes safetensors only)."""
    import torch
    from transformers import AutoModel

    from tests.roundtrip import minilm_folder

    path = tmp_path / "pytorch_model.bin"
    torch.save(AutoModel.from_pretrained(minilm_folder()).state_dict(), path)
    with path.open("rb") as stream:
        assert check_pickled("pytorch_model.bin", stream, path.stat().st_size) == []


def test_findings_are_the_shared_type() -> None:
    assert check_pickled("p.pkl", io.BytesIO(b"cos\nsystem\n."), 12) == [
        Finding("p.pkl", "pickle", "imports os.system")
    ]
