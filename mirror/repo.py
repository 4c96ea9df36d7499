"""Repo identity: which hub, which kind of repo, which id; one owner for the names every module uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class RepoKey:
    """One repo on one hub: `huggingface:org/name`, `huggingface:dataset:org/name`."""

    source: str
    repo_type: str
    repo_id: str

    def __str__(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}:"
        return f"{self.source}:{prefix}{self.repo_id}"
