"""The file members an index implies: `iter_members` is the one place that names and orders them (the
writer, the reader, volume planning and the importers all walk it), with `sums_text` (SHA256SUMS),
`chunk_offset`, and `describe_index`, what a bundle holds as `mirror inspect` shows it (with `judge_index`,
the policy's verdict on each commit's scan).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from mirror.bundle.index import FORMAT, FORMAT_VERSION, BundleIndex, IndexedCommit, IndexedRepo
from mirror.repo import RepoKey, revisions_json
from mirror.snapshot import FileRecord
from mirror.validate.policy import DEFAULT_POLICY, Policy
from mirror.validate.scan import ScannedRevision


class BundleMember(NamedTuple):
    """A file member, as `iter_members` names and orders it.

    A chunk member (`chunk` is its number in the placement's chunks, from 0) carries one piece of `file`'s
    content (`size` and `sha256` are the piece's); `file`, `repo` and `commit` are then the first file with
    that content.
    """

    name: str
    file: FileRecord
    repo: IndexedRepo
    commit: IndexedCommit
    link_to: str | None  # the earlier member that carries the same content, if any
    size: int
    sha256: str
    chunk: int | None = None


def member_name(repo: IndexedRepo, commit: str, path: str, format_version: int | str = FORMAT_VERSION) -> str:
    """`repos/<source>/<repo_type>/<repo_id>/<commit>/<path>`; bundle format 1 had no `<repo_type>`."""
    if format_version == 1:
        return f"repos/{repo.source}/{repo.repo_id}/{commit}/{path}"
    return f"repos/{repo.source}/{repo.repo_type}/{repo.repo_id}/{commit}/{path}"


def chunk_name(sha256: str, number: int, count: int) -> str:
    """`chunks/<sha256>/001`: numbered from 1, zero-padded so that `cat chunks/<sha256>/*` joins them."""
    return f"chunks/{sha256}/{number + 1:0{max(3, len(str(count)))}d}"


def iter_members(index: BundleIndex) -> Iterator[BundleMember]:
    """The file members in archive order (sorted by name); repeated content links to its first member.

    Only what this bundle packs: not content a delta leaves in the target, nor what other volumes pack.
    """
    this = index.volume_set.volume if index.volume_set is not None else None
    found: list[BundleMember] = []
    chunked: set[str] = set()
    for repo in index.repos:
        for c in repo.commits:
            for f in c.files:
                placement = index.placement(f.sha256)
                if placement.chunks:
                    if f.sha256 in chunked:
                        continue
                    chunked.add(f.sha256)
                    count = len(placement.chunks)
                    found += [
                        BundleMember(chunk_name(f.sha256, i, count), f, repo, c, None, p.size, p.sha256, i)
                        for i, p in enumerate(placement.chunks)
                        if p.volume == this
                    ]
                elif not placement.in_target and placement.volume == this:
                    name = member_name(repo, c.commit, f.path, index.format_version)
                    found.append(BundleMember(name, f, repo, c, None, f.size, f.sha256))
    first: dict[str, str] = {}
    for m in sorted(found, key=lambda m: m.name):
        if m.chunk is not None:
            yield m
            continue
        link = first.setdefault(m.sha256, m.name)
        yield m._replace(link_to=None if link == m.name else link)


def chunk_offset(index: BundleIndex, member: BundleMember) -> int:
    """Where a chunk member's bytes start in its file's content."""
    assert member.chunk is not None
    return index.placement(member.file.sha256).offsets[member.chunk]


def sums_text(index: BundleIndex) -> bytes:
    """SHA256SUMS: one `sha256sum -c` line per file member whose bytes are its content, in member order (a
    member packed by a codec is not: README.txt names those)."""
    return "".join(
        f"{m.sha256}  {m.name}\n" for m in iter_members(index) if index.codec(m.sha256) is None
    ).encode("utf-8")


def readme_text(index: BundleIndex) -> bytes | None:
    """README.txt, for a bundle with members packed by a codec (None for any other): what they are, and
    that `mirror import` restores them."""
    coded = [
        (codec.name, m.name) for m in iter_members(index) if (codec := index.codec(m.sha256)) is not None
    ]
    if not coded:
        return None
    lines = [
        "This is a mirror bundle (MIRROR-BUNDLE.json describes it). It opens with `tar --zstd -x`, but the",
        "members listed below are packed with a codec: their bytes are not their files' content until",
        "`mirror import` restores them (and checks each against its sha256, from the index). Every other",
        "file member is its content as is; `sha256sum -c SHA256SUMS` checks those.",
        "",
        "bytegroup: the 16-bit tensors (BF16, F16) of a safetensors file, each block of 4 MiB holding their",
        "high bytes, then their low bytes (the index gives the ranges: each file's `codec`).",
        "",
        *(f"{codec}  {name}" for codec, name in coded),
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")


Judged = Mapping[tuple[RepoKey, str], ScannedRevision]  # (repo, commit) -> its scan and verdict


def judge_index(
    index: BundleIndex, policy: Policy = DEFAULT_POLICY
) -> dict[tuple[RepoKey, str], ScannedRevision]:
    """The verdict of `policy` on each commit's scan the index carries (format 1.2; an older bundle's commits
    have none, and are left out); the repos an auto_map refers to are missing when the bundle lacks them."""
    held = {repo.repo_id for repo in index.repos}
    return {
        (repo.key, c.commit): ScannedRevision.judge(repo.key, c.commit, c.scan, policy, held)
        for repo in index.repos
        for c in repo.commits
        if c.scan is not None
    }


def _commit_scan(commit: IndexedCommit, judged: ScannedRevision | None) -> dict[str, Any]:
    """A commit's scan as `mirror inspect --json` describes it: null when the bundle carries none."""
    if judged is None:
        return {"scan": None}
    data = judged.to_json()
    for key in ("source", "repo_type", "repo_id", "commit", "unscanned"):
        del data[key]
    return {"scan": {**data, "notes": list(commit.scan_notes)}}


def describe_index(index: BundleIndex, judged: Judged | None = None) -> dict[str, Any]:
    """What a bundle holds, JSON-friendly (`mirror inspect --json`): each commit with its scan and the verdict
    on it (`judged`, from `judge_index`; default: the default policy's)."""
    judged = judge_index(index) if judged is None else judged
    repos = []
    for repo in index.repos:
        repos.append(
            {
                **repo.key.to_json(),
                **({"hf_id": repo.hf_id} if repo.hf_id is not None else {}),
                "revisions": revisions_json(repo.revisions),
                "commits": [
                    {
                        "commit": c.commit,
                        "complete": c.complete,
                        "files": len(c.files),
                        "bytes": c.size,
                        **_commit_scan(c, judged.get((repo.key, c.commit))),
                    }
                    for c in repo.commits
                ],
                "files": sum(len(c.files) for c in repo.commits),
                "bytes": sum(c.size for c in repo.commits),
            }
        )
    members = list(iter_members(index))
    data: dict[str, Any] = {
        "format": FORMAT,
        "format_version": index.format_version,
        "tool": index.tool,
        "tool_version": index.tool_version,
        "created": index.created,
        "repos": repos,
        "files": len(members),
        "total_bytes": sum(m.size for m in members),
        "unique_bytes": sum(m.size for m in members if m.link_to is None),
        "ok": all(j.verdict.ok for j in judged.values()),  # the policy denies nothing the bundle carries
    }
    # Only for deltas and volumes, so a plain bundle's description is as it always was.
    if index.volume_set is not None:
        data["volume_set"] = index.volume_set.to_json()
    coded = [(m, codec) for m in members if (codec := index.codec(m.sha256)) is not None]
    if coded:  # format 1.3: each member a codec packs, with it (every other member is plain zstd)
        data["codecs"] = [{"member": m.name, "codec": codec.name, "bytes": m.size} for m, codec in coded]
    elsewhere = index.left_in_target()
    if elsewhere:
        data["in_target"] = {"files": len(elsewhere), "bytes": sum(f.size for f in elsewhere)}
    return data
