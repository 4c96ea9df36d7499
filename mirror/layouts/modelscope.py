"""The `modelscope` layout: the ModelScope cache exactly as modelscope (>= 1.38; modelscope_hub) reads it.

    <cache>/models/<owner>--<name>/
        snapshots/<revision>/<path>                 plain files (no blobs, no symlinks), one folder per
                                                    revision as it is requested: master, v1.0, a commit
        .mirror/receipts/<revision>.json            what mirror imported into each folder
        .mirror/tmp/<id>/                           staging during an import
    <cache>/datasets/<owner>--<name>/...            the same for dataset repos

`modelscope.snapshot_download(id, revision=R, local_files_only=True)` returns `snapshots/R` when it is
non-empty (with no revision: `master`, else `main`, else the only one). A Hugging Face repo without a
`master` also gets `snapshots/master` (its `main`; see `implied_master`), unless a folder mirror did not
write is there already. The cache is `$MODELSCOPE_CACHE`,
else `~/.cache/modelscope` (modelscope_hub's own default; the pre-1.38 SDK used `~/.cache/modelscope/hub`).

Bookkeeping stays inside the repo folder, which modelscope only reads `snapshots/` of: at the cache's top
level its `scan_cache` would take `.mirror/receipts` for an `<owner>/<name>` repo of the flat layout.
Nothing is ever written where modelscope looks for its older layouts (`models/<owner>/<name>`,
`hub/models/<owner>/<name>`, `<owner>/<name>`, `hub/<owner>/<name>`): a repo id cannot contain `--`, so
`models/<owner>--<name>` is never one of them. A non-empty older-layout folder for a repo being imported
would be returned instead of the import (modelscope_hub probes them first), so the import refuses it.

Repo ids are kept as they are: unlike the old SDK, this layout does not mask `.` as `___`. Both
ModelScope- and Hugging Face-sourced repos are taken; an id without an owner (`gpt2`) and Space repos
cannot be expressed and are refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from mirror.bundle import BundleIndex, IndexedRepo
from mirror.errors import MirrorError
from mirror.fsutil import regular_files
from mirror.layouts.dir import DirLayout, Placement
from mirror.layouts.layout import claim_folder
from mirror.repo import RepoKey, folder_name, repo_id_of_folder
from mirror.signing import FolderSequences

# repo_type -> the cache folder modelscope_hub keeps that type in (`{repo_type}s`).
TYPE_FOLDERS = {"model": "models", "dataset": "datasets"}


def repo_folder(repo_type: str, repo_id: str) -> str:
    """`models/<owner>--<name>` (modelscope_hub _repo_cache_dir_path), relative to the cache."""
    return f"{TYPE_FOLDERS[repo_type]}/{folder_name(repo_id)}"


def legacy_folders(cache: Path, repo_type: str, repo_id: str) -> list[Path]:
    """The older layouts modelscope 1.40 reads a repo from before the new one, whenever they are non-empty.

    modelscope_hub (DownloadManager._find_legacy_repo_dir) probes these two first. The `modelscope`
    package's snapshot_download (find_reusable_legacy_repo_dir) also tries `<owner>/<name>`,
    `hub/<owner>/<name>` and `models/<owner>/<name>`, but only while `models/<owner>--<name>` is empty, so
    those never hide an import.
    """
    owner, name = repo_id.split("/", 1)
    segment = TYPE_FOLDERS[repo_type]
    safe_name = name.replace(".", "___")
    return [
        cache / segment / owner / safe_name,
        cache / "hub" / segment / owner / safe_name,
    ]


def implied_master(repo: IndexedRepo) -> str | None:
    """The commit `snapshots/master` stands for when a Hugging Face repo has no `master`: its `main`'s, else
    its first revision's.

    ModelScope serves a Hugging Face repo's `main` as `master`, its default revision: modelscope's own
    snapshot_download (and its AutoModel, which asks for `master` when given `main` or nothing) reads
    `snapshots/master`, and that is the folder it would have downloaded itself.
    """
    if repo.source != "huggingface" or any(name == "master" for name, _ in repo.revisions):
        return None
    return dict(repo.revisions).get("main", repo.revisions[0][1])


def _non_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return False


class ModelScopeLayout(DirLayout):
    name = "modelscope"

    def repo_dir(self, repo: IndexedRepo) -> Path:
        return self.target.joinpath(*repo_folder(repo.repo_type, repo.repo_id).split("/"))

    def placements(self, repo: IndexedRepo) -> list[Placement]:
        # Named by the revision as requested (a commit revision by the commit); `refs/pr/1` nests, as in
        # modelscope's own `snapshots / revision`.
        snapshots = self.repo_dir(repo) / "snapshots"
        found = [Placement(snapshots, name, name, commit) for name, commit in repo.revisions]
        master = implied_master(repo)
        if master is not None:
            found.append(Placement(snapshots, "master", "master", master, implied=True))
        return found

    def receipt_path(self, root: Path, name: str) -> Path:
        return root.parent / ".mirror" / "receipts" / f"{quote(name, safe='')}.json"

    def receipt_paths(self) -> Iterator[Path]:
        for segment in TYPE_FOLDERS.values():
            yield from sorted(self.target.glob(f"{segment}/*/.mirror/receipts/*.json"))

    def staging_root(self, repo: IndexedRepo) -> Path:
        # Inside the repo folder, where modelscope only reads snapshots/.
        return self.repo_dir(repo) / ".mirror" / "tmp"

    @property
    def sequences(self) -> FolderSequences:
        return FolderSequences(self.target / ".mirror-trust")

    def repo_path(self, repo: IndexedRepo) -> Path:
        return self.repo_dir(repo)

    def _repo_dirs(self) -> Iterator[tuple[str, Path]]:
        for repo_type, segment in TYPE_FOLDERS.items():
            base = self.target / segment
            try:
                entries = sorted(base.iterdir())
            except OSError:
                continue
            for entry in entries:
                if "--" in entry.name and entry.is_dir() and not entry.is_symlink():
                    yield repo_type, entry

    def content_files(self) -> Iterator[tuple[Path, str | None]]:
        # Every snapshot folder: what mirror imported, and what modelscope downloaded itself.
        for _, repo_dir in self._repo_dirs():
            yield from ((f, None) for f in regular_files(repo_dir / "snapshots"))

    def _add_unrecorded(self, revisions: dict[tuple[str, str], dict[str, str | None]]) -> None:
        # modelscope's own downloads: snapshots/<revision>/, with no record of the commit.
        for repo_type, repo_dir in self._repo_dirs():
            repo_id = repo_id_of_folder(repo_dir.name)
            revs = revisions.setdefault((repo_type, repo_id), {})
            snaps = repo_dir / "snapshots"
            for folder in sorted(snaps.iterdir()) if snaps.is_dir() else ():
                if folder.is_dir() and not folder.is_symlink() and not folder.name.startswith("."):
                    revs.setdefault(folder.name, None)
            if not revs:
                del revisions[repo_type, repo_id]

    def check(self, index: BundleIndex) -> None:
        folders: dict[Path, RepoKey] = {}
        for repo in index.repos:
            if repo.repo_type not in TYPE_FOLDERS:
                raise MirrorError(
                    f"{repo.key}: the modelscope layout holds models and datasets, not {repo.repo_type}s; "
                    "import it with --layout hf or --layout dir"
                )
            if "/" not in repo.repo_id:
                raise MirrorError(
                    f"{repo.key}: the ModelScope cache names repos <owner>/<name>, and {repo.repo_id!r} has "
                    "no owner; import it with --layout hf or --layout dir"
                )
            claim_folder(
                folders,
                self.repo_dir(repo),
                repo.key,
                "modelscope",
                "import one of them with --layout dir, or into another --target",
            )
            for legacy in legacy_folders(self.target, repo.repo_type, repo.repo_id):
                if _non_empty_dir(legacy):
                    raise MirrorError(
                        f"{repo.key}: modelscope would load the older cache folder {legacy} instead of the "
                        "imported files; move it away and import again"
                    )
        super().check(index)
