"""The parsed manifest: `Manifest` and its `ModelSpec`s (typed, frozen, defaults applied), and the revision
requests (`mirror.repo.RevisionRequest`) they make."""

from __future__ import annotations

from dataclasses import dataclass

from mirror.repo import RepoKey, RevisionRequest, wants
from mirror.validate.policy import DEFAULT_POLICY, Policy


@dataclass(frozen=True)
class ModelSpec:
    """One repo to mirror, with the defaults already applied."""

    repo: str
    source: str
    revisions: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    repo_type: str = "model"
    token_env: str | None = None
    endpoint: str | None = None
    hf_id: str | None = None
    policy: Policy = DEFAULT_POLICY  # its `policy:` over the defaults' `policy:`, key by key
    file: str = ""
    line: int = 0

    @property
    def key(self) -> RepoKey:
        return RepoKey(self.source, self.repo_type, self.repo)

    def wants(self, path: str) -> bool:
        """Whether a repo file passes the entry's include/exclude filter (see `mirror.repo.wants`)."""
        return wants(path, self.include, self.exclude)

    def requests(self) -> tuple[RevisionRequest, ...]:
        """What the entry asks for: each of its revisions, with its filter, endpoint, token, hf_id and policy."""
        return tuple(
            RevisionRequest(
                self.key,
                revision,
                include=self.include,
                exclude=self.exclude,
                endpoint=self.endpoint,
                token_env=self.token_env,
                hf_id=self.hf_id,
                policy=self.policy,
            )
            for revision in self.revisions
        )


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest file."""

    path: str
    models: tuple[ModelSpec, ...]

    def requests(self) -> list[RevisionRequest]:
        """Every revision the manifest asks for, in the order written."""
        return [request for spec in self.models for request in spec.requests()]
