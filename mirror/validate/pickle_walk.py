"""Walk one pickle opcode by opcode, never loading it: the globals it would import, what could not be judged.

The opcodes and their stack effects are the standard library's (`pickletools.code2op`); the loop is ours,
not `pickletools.genops`, because genops reads every argument whole (a 4 GB BINBYTES8 would be 4 GB of
memory) and reads lines without a bound: here byte arguments are skipped in chunks and lines are bounded.
A symbolic stack (strings known, everything else opaque) and memo resolve STACK_GLOBAL's module and name
as the unpickler would; MARKs are tracked, so a stack underflow is seen where the unpickler would fail.
Every pickle is bounded: opcodes, memo entries, stack depth and nesting (a pickle inside a bytes argument,
which `pickle.loads` in the outer pickle could unpickle, is walked too). Nothing here raises on hostile
input: a walk ends with what it saw and, when it stopped early, why.
"""

from __future__ import annotations

import codecs
import io
import pickle
import pickletools
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from mirror.hashing import CHUNK

MAX_OPCODES = 10_000_000  # a state dict of 100,000 tensors takes about 2,000,000
MAX_MEMO = 1_000_000
MAX_STACK = 1_000_000
MAX_LINE = 64 << 10  # a protocol 0 argument (a module name, a number) is a line
MAX_STRING = 4096  # longer strings are kept opaque: no module or name is that long
MAX_NESTED = 1 << 20  # a bytes argument up to this size starting with PROTO is walked as a nested pickle
MAX_DEPTH = 4  # pickles inside pickles

_OPAQUE = object()  # a value on the stack or in the memo that is not a known string


class _Stop(Exception):
    """The walk cannot go on: `detail` says why; `refused` when the unpickler fails at this point too."""

    def __init__(self, detail: str, *, refused: bool = False, truncated: bool = False) -> None:
        super().__init__(detail)
        self.detail, self.refused, self.truncated = detail, refused, truncated


@dataclass
class Walk:
    """What one pickle imports and what could not be judged, in the order met."""

    imports: list[str] = field(default_factory=list)  # "module.name", each once
    problems: list[str] = field(default_factory=list)  # details of things not judged
    end: int | None = None  # the byte after STOP, when the walk reached it
    stopped: str | None = None  # why the walk ended before STOP
    refused: bool = False  # the unpickler would fail where the walk stopped, before importing anything
    truncated: bool = False
    joblib_arrays: bool = False  # stopped at joblib's inline array data
    nested: list[tuple[int, Walk]] = field(default_factory=list)  # pickles in bytes arguments, by position

    def imported(self, name: str) -> None:
        if name not in self.imports:
            self.imports.append(name)

    def note(self, detail: str) -> None:
        if detail not in self.problems:
            self.problems.append(detail)


class Reader:
    """`size` bytes of a stream from its current position, read as consumed; the position counted."""

    def __init__(self, stream: BinaryIO, size: int, base: int = 0) -> None:
        self.stream, self.left, self.pos = stream, size, base

    def read(self, n: int) -> bytes:
        if n > self.left:
            raise _Stop(f"pickle truncated at byte {self.pos + self.left}", refused=True, truncated=True)
        data = self.stream.read(n)
        self.left -= len(data)
        self.pos += len(data)
        if len(data) < n:
            raise _Stop(f"pickle truncated at byte {self.pos}", refused=True, truncated=True)
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            step = min(n, CHUNK)
            self.read(step)
            n -= step

    def line(self) -> bytes:
        """A line without its newline, at most MAX_LINE bytes."""
        got = bytearray()
        while True:
            chunk = self.stream.readline(min(MAX_LINE + 1 - len(got), self.left))
            self.left -= len(chunk)
            self.pos += len(chunk)
            got += chunk
            if got.endswith(b"\n"):
                return bytes(got[:-1])
            if not chunk or self.left == 0:
                raise _Stop(f"pickle truncated at byte {self.pos}", refused=True, truncated=True)
            if len(got) > MAX_LINE:
                raise _Stop(f"a line longer than {MAX_LINE} bytes at byte {self.pos - len(got)}")


# Length-prefixed arguments: the prefix's struct format.
_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: "<B",
    pickletools.TAKEN_FROM_ARGUMENT4: "<i",
    pickletools.TAKEN_FROM_ARGUMENT4U: "<I",
    pickletools.TAKEN_FROM_ARGUMENT8U: "<Q",
}
# One opcode table: pickletools' (code2op is not in its typeshed stub).
_CODE2OP: dict[str, pickletools.OpcodeInfo] = {op.code: op for op in pickletools.opcodes}
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING"}
_BYTES = {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8", "SHORT_BINSTRING", "BINSTRING"}
_IMPORTING = {"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"}
_JOBLIB_WRAPPERS = {"joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper"}


def walk(reader: Reader, depth: int = 0) -> Walk:
    """Walk the pickle at the reader's position up to its STOP (the reader left just past it)."""
    result = Walk()
    state = _State(reader, result, depth)
    try:
        state.run()
    except _Stop as stop:
        result.stopped, result.refused, result.truncated = stop.detail, stop.refused, stop.truncated
        result.refused = result.refused and not state.imported_any
    return result


class _State:
    def __init__(self, reader: Reader, result: Walk, depth: int) -> None:
        self.reader, self.result, self.depth = reader, result, depth
        self.stack: list[object] = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.imported_any = False

    def run(self) -> None:
        reader, result = self.reader, self.result
        for _ in range(MAX_OPCODES):
            pos = reader.pos
            code = reader.read(1)
            op = _CODE2OP.get(code.decode("latin-1"))
            if op is None:
                raise _Stop(f"not a pickle: unknown opcode 0x{code[0]:02x} at byte {pos}", refused=True)
            name = op.name
            value = self.argument(op, pos)
            if name == "STOP":
                self.pop(1, pos)
                result.end = reader.pos
                return
            if name == "PROTO" and isinstance(value, int) and value > pickle.HIGHEST_PROTOCOL:
                raise _Stop(f"not a pickle: protocol {value} at byte {pos}", refused=True)
            self.effect(op, value, pos)
            if len(self.stack) + len(self.marks) > MAX_STACK:
                raise _Stop(f"stack deeper than {MAX_STACK:,} at byte {pos}")
            if len(self.memo) > MAX_MEMO:
                raise _Stop(f"memo larger than {MAX_MEMO:,} entries at byte {pos}")
            if name == "BUILD" and any(w in result.imports for w in _JOBLIB_WRAPPERS):
                result.joblib_arrays = True
                raise _Stop(f"joblib array data inline after byte {reader.pos}: the rest is not scanned")
        raise _Stop(f"more than {MAX_OPCODES:,} opcodes at byte {reader.pos}")

    def argument(self, op: pickletools.OpcodeInfo, pos: int) -> object:
        """The argument's value when the walk needs it (strings, memo indices, globals); else skipped."""
        arg, reader = op.arg, self.reader
        if arg is None:
            return None
        if arg.n >= 0:
            return arg.reader(io.BytesIO(reader.read(arg.n)))
        if arg.n == pickletools.UP_TO_NEWLINE:
            first = reader.line()
            if op.name in ("GLOBAL", "INST"):
                return _text(first, pos) + "." + _text(reader.line(), pos)
            return self.line_value(op.name, first, pos)
        fmt = _PREFIX[arg.n]
        (n,) = struct.unpack(fmt, reader.read(struct.calcsize(fmt)))
        if n < 0:
            raise _Stop(f"not a pickle: negative length at byte {pos}", refused=True)
        if op.name in _STRINGS and n <= MAX_STRING:
            data = reader.read(n)
            self.nested(data, pos)
            try:
                return data.decode("utf-8" if "UNICODE" in op.name else "ascii", "surrogatepass")
            except UnicodeDecodeError:
                return _OPAQUE
        if op.name in _BYTES and n <= MAX_NESTED:
            self.nested(reader.read(n), pos)
            return _OPAQUE
        reader.skip(n)
        return _OPAQUE

    def line_value(self, name: str, line: bytes, pos: int) -> object:
        """A protocol 0 argument read as the unpickler reads it (same functions): where it fails, so does it."""
        try:
            if name in ("GET", "PUT"):
                return int(line)
            if name == "STRING":
                if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
                    raise ValueError("not quoted")
                return codecs.escape_decode(line[1:-1])[0].decode("ascii")
            if name == "UNICODE":
                return str(line, "raw-unicode-escape")
        except ValueError as exc:
            raise _Stop(
                f"not a pickle: {name} argument unreadable at byte {pos} ({exc})", refused=True
            ) from None
        return _OPAQUE  # INT, LONG, FLOAT, PERSID: their values do not matter here

    def nested(self, data: bytes, pos: int) -> None:
        """A bytes or string argument that is itself a pickle (`pickle.loads` could unpickle it)."""
        if len(data) < 2 or data[0] != 0x80 or data[1] > 5 or self.depth >= MAX_DEPTH:
            return
        inner = walk(Reader(io.BytesIO(data), len(data)), self.depth + 1)
        if inner.end is not None or inner.imports or inner.problems or inner.nested:
            self.result.nested.append((pos, inner))  # else bytes that loading refuses before importing

    def effect(self, op: pickletools.OpcodeInfo, value: object, pos: int) -> None:
        name, stack = op.name, self.stack
        if name in _IMPORTING:
            self.importing(op, value, pos)
        elif name == "MARK":
            self.marks.append(len(stack))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            top = self.pop(1, pos)[0]
            stack.append(top)
            self.memo[value if isinstance(value, int) else len(self.memo)] = top
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if value not in self.memo:
                raise _Stop(f"not a pickle: memo entry {value} missing at byte {pos}", refused=True)
            stack.append(self.memo[value])
        elif name == "DUP":
            stack.extend(self.pop(1, pos) * 2)
        elif isinstance(value, str) and name in _STRINGS | {"STRING", "UNICODE"}:
            stack.append(value)
        else:
            self.pop_effect(op, pos)
            stack.extend(_OPAQUE for _ in op.stack_after)

    def importing(self, op: pickletools.OpcodeInfo, value: object, pos: int) -> None:
        """GLOBAL, INST, STACK_GLOBAL, EXT*: what the unpickler would import (once its stack holds up)."""
        if op.name == "STACK_GLOBAL":
            module_name = self.pop(2, pos)
            self.imported_any = True
            if all(isinstance(v, str) for v in module_name):
                self.result.imported(f"{module_name[0]}.{module_name[1]}")
            else:
                self.result.note(f"imports a global computed at load time (at byte {pos})")
        else:
            self.pop_effect(op, pos)
            if op.name.startswith("EXT"):
                if not isinstance(value, int) or value <= 0:
                    raise _Stop(f"not a pickle: {op.name} code {value} at byte {pos}", refused=True)
                self.result.note(f"uses the extension registry ({op.name} code {value} at byte {pos})")
                self.imported_any = True
            else:
                self.result.imported(str(value))
                self.imported_any = True
        self.stack.append(_OPAQUE)

    def pop_effect(self, op: pickletools.OpcodeInfo, pos: int) -> None:
        """Pop what the opcode takes, as pickletools describes it (to a MARK, then the items below it)."""
        before = [item.name for item in op.stack_before]
        if "mark" in before:
            at = before.index("mark")
            if not self.marks:
                raise _Stop(f"not a pickle: {op.name} without a MARK at byte {pos}", refused=True)
            above = len(before) - at - 2  # the items the opcode needs above its mark (OBJ: the class)
            if len(self.stack) - self.marks[-1] < above:
                raise _Stop(f"not a pickle: stack underflow at byte {pos}", refused=True)
            del self.stack[self.marks.pop() :]
            before = before[:at]
        self.pop(len(before), pos)

    def pop(self, n: int, pos: int) -> list[object]:
        fence = self.marks[-1] if self.marks else 0
        if len(self.stack) - fence < n:
            raise _Stop(f"not a pickle: stack underflow at byte {pos}", refused=True)
        if n == 0:
            return []
        taken = self.stack[-n:]
        del self.stack[-n:]
        return taken


def _text(data: bytes, pos: int) -> str:
    """A module or name as the unpickler decodes it (strict UTF-8: where that fails, the unpickler does)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Stop(f"not a pickle: a global's name is not UTF-8 at byte {pos}", refused=True) from None
