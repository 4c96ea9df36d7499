"""Repo identity: which hub, which kind of repo, which id, and what is asked of one revision of it.

The one owner of the names every module uses: the hubs (`SOURCES`, the variables their tokens and
endpoints come from), the kinds of repo, the repo-id grammar, a repo id as one folder name (`org--name`,
the HF cache's `models--org--name`), `RepoKey` (its one string form and its JSON fields) and
`RevisionRequest` (one revision of one repo, as a manifest, a lock file or the store asks for it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from mirror.errors import IntegrityError
from mirror.validate.policy import DEFAULT_POLICY, Policy


@dataclass(frozen=True)
class Hub:
    """A hub mirror syncs from: the variables its token and endpoint are read from, where it is when no
    endpoint is given, and the revision a manifest entry that names none gets."""

    name: str
    token_env: str
    endpoint_env: str
    endpoint: str
    default_revision: str


HUBS = {
    hub.name: hub
    for hub in (
        Hub("huggingface", "HF_TOKEN", "HF_ENDPOINT", "https://huggingface.co", "main"),
        Hub(
            "modelscope", "MODELSCOPE_API_TOKEN", "MODELSCOPE_ENDPOINT", "https://www.modelscope.cn", "master"
        ),
    )
}
SOURCES = tuple(HUBS)  # the `source:` a manifest may name; the first is the default

# Every kind of repo a hub has, what a bundle index may hold; and the kinds a manifest may ask to sync
# (`type:`), the first the default.
REPO_TYPES = ("model", "dataset", "space")
SYNC_REPO_TYPES = ("model", "dataset")


# --- the repo-id grammar ---------------------------------------------------------------------------

_REPO_PART = re.compile(r"[A-Za-z0-9._-]+")
MAX_PART = 96


def repo_id_problem(repo_id: str) -> str | None:
    """Why `repo_id` is not `name` or `org/name` as the hubs allow them, or None: each part 1 to 96 letters,
    digits, `.`, `_` and `-`, neither starting nor ending with `-` or `.`, with no `--` or `..` in it (so
    `org--name` names one folder unambiguously), and no `.git` at the end."""
    parts = repo_id.split("/")
    if len(parts) > 2:
        return f"{repo_id!r} has more than one '/'; a repo id is 'name' or 'org/name'"
    for part in parts:
        if not part:
            return f"{repo_id!r} has an empty part; a repo id is 'name' or 'org/name'"
        if len(part) > MAX_PART:
            return f"{part[:20]!r}... is {len(part)} characters long; each part of a repo id has at most {MAX_PART}"
        if not _REPO_PART.fullmatch(part):
            return f"{repo_id!r} may only contain letters, digits, '.', '_' and '-' (and one '/')"
        if part[0] in "-." or part[-1] in "-.":
            return f"{repo_id!r}: a part of a repo id cannot start or end with '-' or '.'"
        if "--" in part or ".." in part:
            return f"{repo_id!r}: a repo id cannot contain '--' or '..'"
    if repo_id.endswith(".git"):
        return f"{repo_id!r}: a repo id cannot end in '.git'"
    return None


def is_repo_id(repo_id: str) -> bool:
    return repo_id_problem(repo_id) is None


def check_repo_id(repo_id: str) -> str:
    """`repo_id`, or IntegrityError when a record, a bundle or a lock file holds one the grammar refuses."""
    if not is_repo_id(repo_id):
        raise IntegrityError(f"refusing invalid repo id {repo_id!r}")
    return repo_id


# --- a repo id as one folder name ------------------------------------------------------------------


def folder_name(repo_id: str) -> str:
    """`org--name` (a short id stays as it is): a repo id as one folder name, as the store, the HF cache
    and ModelScope's cache write it. One to one, since `--` cannot occur in a repo id."""
    return check_repo_id(repo_id).replace("/", "--")


def repo_id_of_folder(name: str) -> str:
    """The repo id `folder_name` made `name` from: `org--name` -> `org/name`, split at the first `--` (no
    org holds one). Callers check the result, as a folder found on disk may be anything."""
    return name.replace("--", "/", 1)


def cache_folder_name(repo_type: str, repo_id: str) -> str:
    """`models--org--name`, `datasets--org--name`, `models--gpt2`: huggingface_hub's repo_folder_name."""
    return f"{repo_type}s--{folder_name(repo_id)}"


def parse_cache_folder_name(name: str) -> tuple[str, str] | None:
    """(repo type, repo id) of a `cache_folder_name`; None for a folder whose prefix names no kind of repo."""
    kind, sep, rest = name.partition("--")
    repo_type = kind[:-1]
    if not sep or not kind.endswith("s") or repo_type not in REPO_TYPES:
        return None
    return repo_type, repo_id_of_folder(rest)


# --- the identity of a repo, and what is asked of it -------------------------------------------------


@dataclass(frozen=True, order=True)
class RepoKey:
    """One repo on one hub: `huggingface:org/name`, `huggingface:dataset:org/name`."""

    source: str
    repo_type: str
    repo_id: str

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}:"
        return f"{self.source}:{prefix}{self.repo_id}"

    def to_json(self) -> dict[str, Any]:
        """The fields every JSON output that names a repo uses."""
        return {"source": self.source, "repo_type": self.repo_type, "repo_id": self.repo_id}


def revisions_json(revisions: tuple[tuple[str, str], ...]) -> list[dict[str, str]]:
    """Revision names and their commits, as every JSON output and record lists them."""
    return [{"name": name, "commit": commit} for name, commit in revisions]


def wants(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a repo file passes an include/exclude filter.

    Patterns are matched with ``fnmatchcase`` against the whole repo path, with no special meaning for
    "/": ``*`` matches across folders, so ``*.h5`` matches ``sub/x.h5`` and ``onnx/*`` matches everything
    under ``onnx/``, while ``config.json`` matches only the top-level file. An empty include wants
    everything; exclude always wins.
    """
    if include and not any(fnmatchcase(path, pattern) for pattern in include):
        return False
    return not any(fnmatchcase(path, pattern) for pattern in exclude)


@dataclass(frozen=True)
class RevisionRequest:
    """One revision of one repo, as a manifest entry, a lock file entry or the store's records ask for it:
    which files (include/exclude), where to ask (`endpoint`, None for the hub's own; the token from the
    variable `token_env`, None for the hub's), the id it takes in the HF cache (`hf_id`) and the policy a
    sync judges it by (a manifest entry's `policy:`; the defaults for a lock file's or the store's)."""

    key: RepoKey
    revision: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    endpoint: str | None = None
    token_env: str | None = None
    hf_id: str | None = None
    policy: Policy = DEFAULT_POLICY

    def wants(self, path: str) -> bool:
        return wants(path, self.include, self.exclude)
