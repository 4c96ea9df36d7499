"""What the Hugging Face Hub answers, built from what a store holds: repo info, tree entries and their
pages, refs, a file's headers, and the Hub's not-found answers. Pure: no request, no disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from starlette.responses import JSONResponse

from mirror.clock import parse_iso
from mirror.hashing import lfs_pointer
from mirror.serve.replies import hub_error
from mirror.serve.view import ServedCommit, ServedRepo
from mirror.snapshot import FileRecord

PAGE_SIZE = 1000  # tree entries per answer, as the Hub pages them; `Link: <...>; rel="next"` to the next

# X-Error-Code values huggingface_hub turns into its own exceptions (utils/_http.py, hf_raise_for_status)
REPO_NOT_FOUND = "RepoNotFound"
REVISION_NOT_FOUND = "RevisionNotFound"
ENTRY_NOT_FOUND = "EntryNotFound"
# A file the policy refuses (403): huggingface_hub raises its error, with the server's message, at once only
# for this code (a 403 of any other code on the HEAD of a download becomes "check your connection", the
# message lost), so the reason reaches the user; the message says it is the policy, not a gate.
POLICY_DENIED = "GatedRepo"


class Miss(Exception):
    """A request the store cannot answer: the Hub's status, `X-Error-Code` (None for a route the Hub does
    not have), the message of its JSON `error`, and the commit when the revision was known."""

    def __init__(self, code: str | None, message: str, commit: str | None = None, status: int = 404) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.commit = commit
        self.status = status

    def response(self) -> JSONResponse:
        headers = {"X-Repo-Commit": self.commit} if self.commit is not None else {}
        return hub_error(self.status, self.message, self.code, headers)


def repo_not_found() -> Miss:
    return Miss(REPO_NOT_FOUND, "Repository not found")


def revision_not_found(revision: str) -> Miss:
    # the name goes back in a header too: kept as sent when it is printable ASCII, else percent-encoded
    shown = revision if revision.isascii() and revision.isprintable() else quote(revision, safe="/")
    return Miss(REVISION_NOT_FOUND, f"Invalid rev id: {shown}")


def entry_not_found(commit: str) -> Miss:
    return Miss(ENTRY_NOT_FOUND, "Entry not found", commit)


def policy_refused(commit: str, reason: str) -> Miss:
    """A file the serving policy refuses: 403 with the reason (`Policing.reason`)."""
    return Miss(POLICY_DENIED, reason, commit, status=403)


def no_route() -> Miss:
    return Miss(None, "Not Found")


def hub_time(value: str) -> str | None:
    """The Hub's form of a time (`2026-11-20T10:00:00.000Z`) for one mirror wrote; None if it is not one."""
    if parse_iso(value) is None:
        return None
    return value[:-1] + ".000Z"


# --- files --------------------------------------------------------------------------------------------


def file_headers(record: FileRecord, commit: str) -> dict[str, str]:
    """The headers the clients read on resolve: the blob's etag (the git oid, the sha256 of an LFS file),
    the commit, and for an LFS file the linked etag and size. Never a Xet hash."""
    headers = {"ETag": f'"{record.etag}"', "X-Repo-Commit": commit}
    if record.lfs:
        headers["X-Linked-Etag"] = f'"{record.sha256}"'
        headers["X-Linked-Size"] = str(record.size)
    return headers


def lfs_json(record: FileRecord, sha_key: str) -> dict[str, Any]:
    pointer_size = len(lfs_pointer(record.sha256, record.size))
    return {sha_key: record.sha256, "size": record.size, "pointerSize": pointer_size}


# --- repo info and refs -------------------------------------------------------------------------------


def repo_info(
    repo: ServedRepo, served: ServedCommit, blobs: bool, card: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`GET /api/{models,datasets}/{repo}[/revision/{rev}][?blobs=true]`: the commit and its files
    (`siblings`; with `blobs`, their size, git oid and LFS sha256), the fields the clients read, and what
    the card's metadata says (`cardData`, and from it `tags`, `pipeline_tag`, `library_name`)."""
    key = repo.key
    siblings: list[dict[str, Any]] = []
    for f in served.files:
        sibling: dict[str, Any] = {"rfilename": f.path}
        if blobs:
            sibling.update({"size": f.size, "blobId": f.oid})
            if f.lfs:
                sibling["lfs"] = lfs_json(f, "sha256")
        siblings.append(sibling)
    info: dict[str, Any] = {
        "_id": hashlib.sha1(f"{key.repo_type}/{key.repo_id}".encode(), usedforsecurity=False).hexdigest()[
            :24
        ],
        "id": key.repo_id,
    }
    if key.repo_type == "model":
        info["modelId"] = key.repo_id
    if "/" in key.repo_id:
        info["author"] = key.repo_id.split("/", 1)[0]
    info["sha"] = served.commit
    times = {
        "lastModified": hub_time(served.synced_at or repo.last_update()),
        "createdAt": hub_time(min((r.synced_at for r in repo.refs.values()), default="")),
    }
    info.update({name: value for name, value in times.items() if value is not None})
    info.update(
        {
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in served.files),
        }
    )
    if card is not None:
        info["cardData"] = card
        tags = card.get("tags")
        if isinstance(tags, list):
            info["tags"] = [t for t in tags if isinstance(t, str)]
        info.update({k: card[k] for k in ("pipeline_tag", "library_name") if isinstance(card.get(k), str)})
    return info


def refs_json(repo: ServedRepo) -> dict[str, list[dict[str, str]]]:
    """`GET /api/{models,datasets}/{repo}/refs`. The store keeps no branch/tag distinction (a revision name
    is just a name), so every name is listed as a branch, except `refs/pr/N` (a pull request) and
    `refs/convert/...` (a conversion) as the Hub lists them; no tags."""
    out: dict[str, list[dict[str, str]]] = {"branches": [], "tags": [], "converts": [], "pullRequests": []}
    for name, ref in sorted(repo.refs.items()):
        if name.startswith("refs/pr/"):
            out["pullRequests"].append({"name": name, "ref": name, "targetCommit": ref.commit})
        elif name.startswith("refs/convert/"):
            out["converts"].append(
                {"name": name.removeprefix("refs/convert/"), "ref": name, "targetCommit": ref.commit}
            )
        else:
            out["branches"].append({"name": name, "ref": f"refs/heads/{name}", "targetCommit": ref.commit})
    return out


# --- the tree -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Folder:
    path: str
    oid: str  # the git tree id of what the store holds under it


Entry = FileRecord | Folder


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def folder_oids(files: Iterable[FileRecord]) -> dict[str, str]:
    """The git tree id of every folder ("" the root) of these files, as git computes it (files as mode
    100644); the Hub's, when the store holds every file of the commit."""
    files = list(files)
    folders = {""}
    for f in files:
        folder = parent_of(f.path)
        while folder not in folders:
            folders.add(folder)
            folder = parent_of(folder)
    # per folder: (git's sort key: the name, a folder's with "/" appended; the tree entry)
    content: dict[str, list[tuple[bytes, bytes]]] = {folder: [] for folder in folders}
    for f in files:
        name = f.path.rpartition("/")[2].encode()
        content[parent_of(f.path)].append((name, b"100644 " + name + b"\0" + bytes.fromhex(f.oid)))
    oids: dict[str, str] = {}
    for folder in sorted(folders, key=lambda p: p.count("/") + bool(p), reverse=True):  # deepest first
        body = b"".join(entry for _, entry in sorted(content[folder]))
        oids[folder] = hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()
        if folder:
            name = folder.rpartition("/")[2].encode()
            entry = b"40000 " + name + b"\0" + bytes.fromhex(oids[folder])
            content[parent_of(folder)].append((name + b"/", entry))
    return oids


def tree(files: Sequence[FileRecord], under: str, recursive: bool) -> list[Entry] | None:
    """The entries of `tree/{rev}/{under}`, sorted by path: what is directly in the folder (everything below
    it when `recursive`), folders included; None when `under` is no folder of these files."""
    oids = folder_oids(files)
    if under not in oids:
        return None
    prefix = f"{under}/" if under else ""
    entries: list[Entry] = [Folder(p, oid) for p, oid in oids.items() if p.startswith(prefix) and p != under]
    entries += [f for f in files if f.path.startswith(prefix)]
    if not recursive:
        entries = [e for e in entries if parent_of(e.path) == under]
    return sorted(entries, key=lambda e: e.path)


def entries_at(files: Sequence[FileRecord], paths: Iterable[str]) -> list[Entry]:
    """The entries `paths-info` answers: those of the asked paths that are files or folders, in order."""
    by_path: dict[str, Entry] = {f.path: f for f in files}
    for folder, oid in folder_oids(files).items():
        if folder:
            by_path[folder] = Folder(folder, oid)
    found = (by_path.get(p.strip("/")) for p in dict.fromkeys(paths))
    return [e for e in found if e is not None]


def entry_json(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, Folder):
        return {"type": "directory", "oid": entry.oid, "size": 0, "path": entry.path}
    out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": entry.path}
    if entry.lfs:
        out["lfs"] = lfs_json(entry, "oid")
    return out


def page(count: int, cursor: str | None, size: int) -> tuple[int, int, str | None]:
    """The slice [start, end) of `count` entries one answer holds, and the cursor of the next (None at the
    end). A cursor is the index of the next entry; one that is not raises ValueError."""
    start = 0 if cursor is None else int(cursor) if cursor.isdigit() else -1
    if not 0 <= start <= count or (cursor is not None and cursor != str(start)):
        raise ValueError(f"invalid cursor {cursor!r}")
    end = min(count, start + size)
    return start, end, (str(end) if end < count else None)
