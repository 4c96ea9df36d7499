"""The hub's own scan of a revision's files, read from its answers as findings of kind `hub_flagged`.

The Hugging Face Hub scans what is pushed to it (its pickle-import scan, an antivirus, partners' scanners)
and says so in two answers, only when asked:
- the repo info with `securityStatus=true`: `securityRepoStatus` {scansDone, filesWithIssues: [{path,
  level}]}, the files of the revision with an issue;
- paths-info (or the tree listing) with `expand=true`: each file's `securityFileStatus` {status, avScan,
  pickleImportScan[, jFrogScan, protectAiScan]}, a scanner's part being {status, message, pickleImports:
  [{module, name, safety}]}, or in the older shape huggingface_hub documents avScan {virusFound,
  virusNames} and pickleImportScan {highestSafetyLevel, imports}. Both shapes are read.

This module only reads answers (untrusted: a part of the wrong shape is skipped, never raised on; every
string and list is cut to a bound); the requests are the source's (`HuggingFaceSource.hub_scan`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mirror.validate.findings import Finding

# What a scan's status says when it found nothing (yet): no finding. Any other word is the hub flagging
# the file (deny by default: a status this list does not know is shown as the hub wrote it).
NOT_FLAGGED = frozenset({"safe", "unscanned", "queued", "error", ""})
# The partners' scanners a file's status may carry, and how a reviewer knows them.
PARTNERS = (("jFrogScan", "JFrog"), ("protectAiScan", "Protect AI"))
MAX_WORD = 120  # characters of one word from the hub (a status, a module, a virus name)
MAX_LISTED = 8  # globals or virus names named in one detail


@dataclass(frozen=True)
class HubScan:
    """The hub's scan of one revision: a finding per file it flagged, and notes (why there may be none:
    the hub does not report, a request failed, its scans are not done)."""

    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()


def flagged_paths(info: Any, paths: Iterable[str]) -> dict[str, str] | None:
    """Each file of `paths` the repo info's `securityRepoStatus` lists with an issue, with the hub's level;
    None when the answer carries no `securityRepoStatus` (a hub that does not report)."""
    status = info.get("securityRepoStatus") if isinstance(info, dict) else None
    if not isinstance(status, dict):
        return None
    wanted = set(paths)
    issues = status.get("filesWithIssues")
    out: dict[str, str] = {}
    for issue in issues if isinstance(issues, list) else []:
        path = issue.get("path") if isinstance(issue, dict) else None
        if isinstance(path, str) and path in wanted:
            out[path] = _word(issue.get("level")) or "flagged"
    return out


def scans_done(info: Any) -> bool:
    """Whether the repo info says the hub has finished scanning (absent: assumed so)."""
    status = info.get("securityRepoStatus") if isinstance(info, dict) else None
    return not isinstance(status, dict) or status.get("scansDone") is not False


def file_statuses(entries: Any) -> dict[str, Any]:
    """Each file's `securityFileStatus` in a paths-info or tree answer (a list of entries), by path."""
    out: dict[str, Any] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and "securityFileStatus" in entry:
            out[entry["path"]] = entry["securityFileStatus"]
    return out


def detail(status: Any) -> str | None:
    """The hub's words for one file's `securityFileStatus` ("the hub's scan: unsafe; pickle imports
    posix.system (dangerous)", "the hub's antivirus: virus found (Eicar-Test-Signature)"), None when no
    part of it flags the file."""
    if not isinstance(status, dict):
        return None
    parts: list[str] = []
    overall = _word(status.get("status"))
    pickle = status.get("pickleImportScan")
    pickle_words = _pickle_words(pickle) if isinstance(pickle, dict) else None
    if overall not in NOT_FLAGGED or pickle_words:
        parts.append(
            f"the hub's scan: {overall or 'flagged'}" + (f"; {pickle_words}" if pickle_words else "")
        )
    av = status.get("avScan")
    if isinstance(av, dict) and (words := _av_words(av)):
        parts.append(words)
    for key, partner in PARTNERS:
        scan = status.get(key)
        if isinstance(scan, dict) and (word := _word(scan.get("status"))) not in NOT_FLAGGED:
            message = _word(scan.get("message"))
            parts.append(f"{partner}'s scan: {word}" + (f" ({message})" if message else ""))
    return "; ".join(parts) or None


def finding(path: str, status: Any, level: str) -> Finding:
    """The finding for a file the repo's status lists with `level`: in the words of its own status when
    it has one that flags it, else in the level's."""
    return Finding(path, "hub_flagged", detail(status) or f"the hub's scan: {level}")


def _pickle_words(scan: dict[str, Any]) -> str | None:
    """The pickle scan's words: the globals it did not call innocuous ("pickle imports posix.system
    (dangerous), ..."), else its rating or status when it flags; None when it flags nothing."""
    imports = scan.get("pickleImports", scan.get("imports"))
    named = []
    for item in imports if isinstance(imports, list) else []:
        if isinstance(item, dict) and (safety := _word(item.get("safety"))) != "innocuous":
            named.append(f"{_word(item.get('module'))}.{_word(item.get('name'))} ({safety or 'unrated'})")
    if named:
        return "pickle imports " + _listed(named)
    level = _word(scan.get("highestSafetyLevel") or "")
    if level and level != "innocuous":
        return f"pickle imports rated {level}"
    word = _word(scan.get("status"))
    return f"pickle import scan: {word}" if word not in NOT_FLAGGED and "status" in scan else None


def _av_words(scan: dict[str, Any]) -> str | None:
    names = scan.get("virusNames")
    listed = [_word(n) for n in names if isinstance(n, str)] if isinstance(names, list) else []
    if scan.get("virusFound") is True:
        return "the hub's antivirus: virus found" + (f" ({_listed(listed)})" if listed else "")
    word = _word(scan.get("status"))
    if word in NOT_FLAGGED:
        return None
    message = _word(scan.get("message"))
    found = "virus found" if word == "unsafe" else word
    return f"the hub's antivirus: {found}" + (f" ({message})" if message else "")


def _word(value: Any) -> str:
    """A string from the hub, cut to MAX_WORD characters ("" for anything else)."""
    if not isinstance(value, str):
        return ""
    return value if len(value) <= MAX_WORD else value[:MAX_WORD] + "…"


def _listed(words: list[str]) -> str:
    more = len(words) - MAX_LISTED
    return ", ".join(words[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")
