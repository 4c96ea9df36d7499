"""The checks of one manifest value (repo id, revision, include/exclude pattern, source, type, token_env,
endpoint): each returns the problem to report, or None. Where the value was written is the caller's."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from mirror.repo import HUBS, SOURCES, SYNC_REPO_TYPES, repo_id_problem
from mirror.settings import endpoint_problem

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters git forbids in ref names; no hub branch or tag can contain them.
_REF_FORBIDDEN = set("~^:?*[\\")


def closest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest of choices, or ""."""
    match = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def repo_problem(repo: str) -> str | None:
    if "://" in repo or repo.startswith(("huggingface.co/", "modelscope.cn/")):
        return f"{repo!r} looks like a URL; write just the repo id, e.g. 'org/name'"
    return repo_id_problem(repo)


def revision_problem(rev: str) -> str | None:
    if not rev:
        return "a revision cannot be empty"
    if any(c.isspace() or not c.isprintable() for c in rev):
        return f"revision {rev!r} contains whitespace or control characters"
    if rev[0] in "/-":
        return f"revision {rev!r} cannot start with '/' or '-'"
    if ".." in rev or "//" in rev or "@{" in rev or rev.endswith("/"):
        return f"revision {rev!r} is not a valid branch, tag or commit (no '..', '//', '@{{' or trailing '/')"
    bad = sorted(_REF_FORBIDDEN.intersection(rev))
    if bad:
        return f"revision {rev!r} contains {''.join(bad)!r}, which no branch or tag can contain"
    return None


def _unbalanced_bracket(pattern: str) -> bool:
    # Mirrors fnmatch.translate: "]" right after "[" or "[!" is a literal member of the set.
    # fnmatch would quietly treat a lone "[" as a literal, which is never what was meant.
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] != "[":
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            return True
        i = j + 1
    return False


def glob_problem(pattern: str) -> str | None:
    if not pattern:
        return "a pattern cannot be empty"
    if pattern.startswith("/"):
        return f"pattern {pattern!r} is absolute; patterns match paths inside the repo, e.g. 'onnx/*'"
    if "\\" in pattern:
        return f"pattern {pattern!r} contains '\\'; repo paths use '/' between folders"
    if pattern.endswith("/"):
        return f"pattern {pattern!r} ends in '/' and would match nothing; write {pattern + '*'!r}"
    segments = pattern.split("/")
    if ".." in segments:
        return f"pattern {pattern!r} has a '..' segment; patterns cannot leave the repo"
    if "." in segments or "" in segments:
        return f"pattern {pattern!r} has an empty or '.' segment and would match nothing"
    if _unbalanced_bracket(pattern):
        return f"pattern {pattern!r} has a '[' without a closing ']'"
    return None


def scalar_problem(name: str, text: str) -> str | None:
    """The problem with the string value of key ``name`` (source, type, token_env, endpoint, repo, hf_id)."""
    if name == "source" and text not in SOURCES:
        return f"unknown source {text!r}{closest(text, SOURCES)}; use one of: {', '.join(SOURCES)}"
    if name == "type" and text not in SYNC_REPO_TYPES:
        allowed = ", ".join(SYNC_REPO_TYPES)
        return f"unknown type {text!r}{closest(text, SYNC_REPO_TYPES)}; use one of: {allowed}"
    if name == "token_env" and not _ENV_NAME.fullmatch(text):
        example = HUBS["huggingface"].token_env
        return f"{text!r} is not an environment variable name; give the variable's name (e.g. {example})"
    if name == "endpoint":
        return endpoint_problem(text)
    if name in ("repo", "hf_id"):
        return repo_problem(text)
    return None
