"""Checks that names from a hub, a manifest or an archive stay inside their target before any join."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from mirror.errors import IntegrityError

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_PATH_BYTES = 4096
NAME_MAX = 255  # bytes in one name (a path component) on Linux file systems
PATH_MAX = 4096  # bytes in a path the kernel takes, with its terminating NUL


def is_safe_relpath(path: str) -> bool:
    """A relative POSIX path with no empty, `.` or `..` segment, no backslash, no control character (a
    newline would break SHA256SUMS), valid UTF-8 and at most 4096 bytes."""
    if not path or path.startswith("/") or "\\" in path or _CONTROL.search(path):
        return False
    try:
        if len(path.encode("utf-8")) > MAX_PATH_BYTES:
            return False
    except UnicodeEncodeError:  # a lone surrogate: no file system or tar header can carry it
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def check_relpath(path: str, what: str = "path") -> str:
    if not is_safe_relpath(path):
        raise IntegrityError(f"refusing unsafe {what} {path!r}: it would leave its folder")
    return path


def is_commit(value: str) -> bool:
    """A git commit or blob id: 40 lowercase hex digits."""
    return bool(_HEX40.fullmatch(value))


def is_sha256(value: str) -> bool:
    """A sha256 digest as mirror writes it everywhere: 64 lowercase hex digits."""
    return bool(_HEX64.fullmatch(value))


def check_commit(value: str) -> str:
    if not is_commit(value):
        raise IntegrityError(f"refusing invalid commit id {value!r} (want 40 lowercase hex digits)")
    return value


def join_inside(root: Path, relpath: str) -> Path:
    """root/relpath, after checking relpath cannot leave root."""
    return root.joinpath(*check_relpath(relpath).split("/"))


def name_problem(path: str, room: int = 0) -> str | None:
    """Why path cannot exist on a Linux file system (a name over NAME_MAX bytes, or the whole path over
    PATH_MAX - 1 - room), or None. The one check of what the file system allows, for bundles and targets."""
    data = path.encode("utf-8", "surrogateescape")
    if len(data) + room >= PATH_MAX:
        return f"the path is too long: {len(data)} bytes (at most {PATH_MAX - 1 - room} fit)"
    longest = max(data.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return (
            f"the name {longest[:32].decode('utf-8', 'replace')}... is too long: {len(longest)} bytes (the "
            f"file system allows {NAME_MAX})"
        )
    return None


def nested_names(names: Iterable[str]) -> list[tuple[str, str]]:
    """(folder, name) for each relative path that lies inside another of the names (`v` and `v/x`): both
    cannot exist on disk, one a file and the other a folder."""
    known = set(names)
    return [
        (folder, name)
        for name in sorted(known)
        for folder in ("/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1))
        if folder in known
    ]


def tree_problems(paths: Iterable[str], limit: int = 10) -> list[str]:
    """Why `paths` cannot all be files of one real folder tree (empty if they can): an unsafe name (see
    is_safe_relpath) or one the file system cannot hold (name_problem), a path listed twice, a path that is a file and also a
    folder of another (`a` and `a/b`). Names that differ only in case are fine (a Linux tree holds both).
    At most `limit` problems are named, so a hostile listing cannot make a huge message."""
    problems: list[str] = []
    seen: set[str] = set()
    safe: list[str] = []
    for path in paths:
        if not is_safe_relpath(path):
            problems.append(f"unsafe name {path!r}")
        elif (why := name_problem(path)) is not None:
            problems.append(f"{path!r}: {why}")
        elif path in seen:
            problems.append(f"{path!r} listed twice")
        else:
            seen.add(path)
            safe.append(path)
    problems += [
        f"{folder!r} is a file and also the folder of {path!r}" for folder, path in nested_names(safe)
    ]
    if len(problems) > limit:
        problems[limit:] = [f"and {len(problems) - limit} more"]
    return problems


def check_tree(paths: Iterable[str], what: str) -> None:
    """Raise IntegrityError naming the paths when `paths` cannot be one real tree (see tree_problems)."""
    problems = tree_problems(paths)
    if problems:
        raise IntegrityError(f"refusing {what}: it cannot be a real folder tree: {'; '.join(problems)}")
