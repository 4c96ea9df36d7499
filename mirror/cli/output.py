"""What the commands print: results as JSON or human lines on stdout, errors and logs on stderr, untrusted
text escaped (see mirror.printable)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import click

from mirror.printable import printable
from mirror.progress import VERBOSE
from mirror.repo import RepoKey
from mirror.units import human_size
from mirror.validate.policy import ruling_words

if TYPE_CHECKING:
    from mirror.export import ExportResult
    from mirror.gc import GcReport
    from mirror.inventory import InventoryWritten
    from mirror.report import ImportReport, MissingRepo, RepoReport
    from mirror.scanning import ScanReport
    from mirror.signing import KeyFiles
    from mirror.status import RevisionStatus
    from mirror.sync import ItemResult
    from mirror.validate.scan import ScannedRevision
    from mirror.verify import BundleCheck, StoreCheck, TargetCheck

__all__ = ["emit", "human_size", "print_error"]


def emit(result: Any, as_json: bool, lines: Iterable[str]) -> None:
    """Print a result: its JSON for machines (`to_json()` of a result, or of each in a list), else the
    human lines (untrusted text escaped: see printable)."""
    if as_json:
        # ensure_ascii (the default) writes control characters and lone surrogates as \u escapes.
        click.echo(json.dumps(json_of(result), indent=2, sort_keys=False))
    else:
        for line in lines:
            click.echo(printable(line))


def json_of(result: Any) -> Any:
    """A result as JSON data: its `to_json()`, a list of them, or data already."""
    if hasattr(result, "to_json"):
        return result.to_json()
    if isinstance(result, list | tuple):
        return [json_of(r) for r in result]
    return result


def print_error(message: str) -> None:
    """The one-line human message of a failure, on stderr."""
    click.echo(printable(f"mirror: error: {message}"), err=True)


# logs --------------------------------------------------------------------------------------------------------
def setup_logging(verbose: int, quiet: bool) -> None:
    """Log lines on stderr, timestamped and escaped: -q errors only, -v VERBOSE, -vv debug."""
    logging.addLevelName(VERBOSE, "VERBOSE")
    level = (
        logging.ERROR if quiet else logging.DEBUG if verbose >= 2 else VERBOSE if verbose else logging.INFO
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    logger = logging.getLogger("mirror")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    if verbose < 2:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("httpx2").setLevel(logging.WARNING)


class EscapingFormatter(logging.Formatter):
    """Log lines with untrusted text escaped (see mirror.printable); a traceback keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(map(printable, super().formatException(ei).splitlines()))


# the commands' lines -----------------------------------------------------------------------------------------
def describe_items(items: Iterable[ItemResult]) -> Iterator[str]:
    """sync: a line per model revision, then one per warning of its checks (each line printed escaped)."""
    for item in items:
        yield describe_item(item)
        yield from (f"  warning: {w}" for w in item.warnings)


def describe_item(item: ItemResult) -> str:
    """sync: one model revision."""
    if item.error:
        return f"FAILED  {item.target}: {item.error}"
    return (
        f"ok      {item.target} -> {item.commit} ({len(item.records)} files, {item.downloaded} downloaded, "
        f"{human_size(item.bytes_downloaded)})"
    )


def status_line(row: RevisionStatus) -> str:
    return (
        f"{row.state:<15} {row.key}@{row.revision} {row.commit or '-'} {row.synced_at or ''} "
        f"{row.files} files {human_size(row.size)}"
        + (f" upstream {row.upstream}" if row.upstream and row.upstream != row.commit else "")
        + (f" ({row.error})" if row.error else "")
    )


def gc_lines(result: GcReport) -> list[str]:
    verb = "would remove" if result.dry_run else "removed"
    return [
        *(f"{verb} revision {r}" for r in result.refs),
        *(f"{verb} snapshot {s}" for s in result.snapshots),
        *(f"{verb} blob {b}" for b in result.blobs),
        *(f"{verb} abandoned {a}" for a in result.abandoned),
        f"{verb} {len(result.blobs)} blobs, {human_size(result.bytes)}",
    ]


def export_lines(result: ExportResult) -> list[str]:
    lines = []
    for bundle in result.bundles:
        summary, signed = bundle.summary, bundle.signature
        lines += [
            f"wrote {summary.path} ({human_size(summary.size)}, {summary.files} files of {summary.repos} repos)",
            f"sha256 {summary.sha256}",
        ]
        if signed is not None:
            lines.append(f"signed {signed.path} ({signed.describe()})")
    if result.delta:
        elsewhere = result.left_to_target
        lines.append(
            f"delta: {len(elsewhere)} files ({human_size(sum(f.size for f in elsewhere))}) left to the far side"
        )
    lines += [f"  warning: {r}: {ruling_words(w)}" for r in result.revisions for w in r.verdict.warned]
    return lines


def inventory_line(written: InventoryWritten) -> str:
    held, stats = written.inventory, written.stats
    return (
        f"wrote {written.output}: {len(held.blobs)} contents ({human_size(written.bytes)}) of {len(held.repos)} "
        f"repos in {written.target}; hashed {stats.hashed} of {stats.files} files ({human_size(stats.hashed_bytes)})"
    )


def keygen_lines(keys: KeyFiles) -> list[str]:
    return [
        f"private key {keys.private_key} (keep it on the connected side; mode 0600)",
        f"public key  {keys.public_key} (copy it to the air-gapped side, for import --trust)",
        f"key id      {keys.key_id}",
    ]


NOT_SCANNED = (
    "not scanned: a bundle of format {version} carries no scan; `mirror scan BUNDLE` reads every byte and "
    "scans it"
)


def describe_bundle(data: dict[str, Any], judged: Mapping[tuple[RepoKey, str], ScannedRevision]) -> list[str]:
    """inspect: what a bundle holds (`describe_index`'s data), each commit with its findings and verdict
    (`judged`, `judge_index`'s), as `mirror scan` shows a revision."""
    lines = [
        f"mirror bundle v{data['format_version']}, made {data['created']} by mirror {data['tool_version']}"
    ]
    for repo in data["repos"]:
        key = RepoKey(repo["source"], repo["repo_type"], repo["repo_id"])
        lines.append(f"{repo['source']}:{repo['repo_id']} ({repo['repo_type']})")
        for rev in repo["revisions"]:
            lines.append(f"  {rev['name']} -> {rev['commit']}")
        for c in repo["commits"]:
            lines.append(f"  {c['commit']}: {c['files']} files, {human_size(c['bytes'])}")
            revision = judged.get((key, c["commit"]))
            if revision is None:
                lines.append("    " + NOT_SCANNED.format(version=data["format_version"]))
                continue
            lines += [f"    {line}" for line in scanned_revision_lines(revision)]
            lines += [f"    note    {note}" for note in c["scan"]["notes"]]
    for coded in data.get("codecs", ()):
        lines.append(f"codec {coded['codec']}  {coded['member']} (restored by mirror import)")
    if "codecs" in data:
        lines.append("codec zstd  every other member (as is)")
    if "volume_set" in data:
        names = data["volume_set"]["names"]
        lines.append(f"volume {data['volume_set']['volume']} of {len(names)}: {', '.join(names)}")
    if "in_target" in data:
        elsewhere = data["in_target"]
        lines.append(
            f"delta: {elsewhere['files']} files ({human_size(elsewhere['bytes'])}) are left to the target"
        )
    lines.append(f"total {human_size(data['total_bytes'])}, unique {human_size(data['unique_bytes'])}")
    denied = sum(1 for r in judged.values() if not r.verdict.ok)
    if judged:
        state = "ok  " if denied == 0 else "DENIED  "
        lines.append(f"{state}{len(judged)} revision(s) scanned, {denied} denied by the policy")
    return lines


def store_lines(check: StoreCheck) -> list[str]:
    """verify: the problems of the store, else that it passed."""
    return check.problems if not check.ok else [f"ok  {check.store}"]


def describe_verified(check: BundleCheck) -> str:
    """verify: a bundle that passed."""
    if check.transfer_checked:
        return f"ok  {check.bundle} (sha256 {check.sha256}, as its .sha256 says)"
    return (
        f"ok  {check.bundle} (sha256 {check.sha256}; no .sha256 beside it: the transfer digest was "
        "not checked, compare it with the one written on export)"
    )


def target_lines(check: TargetCheck) -> list[str]:
    """verify --target: the problems found, else the revisions removed and the tree's size."""
    if not check.ok:
        return check.problems
    return [*check.removed, f"ok  {check.target} ({check.files} files, {human_size(check.bytes)})"]


# import reports


def repo_report_line(report: RepoReport) -> str:
    revs = ", ".join(f"{n} -> {c[:12]}" for n, c in report.revisions)
    kept = f"; kept {', '.join(report.kept)} as newer than this bundle" if report.kept else ""
    if report.already_present:
        return f"present   {report.repo} ({revs}) at {report.path}{kept}"
    return (
        f"imported  {report.repo} ({revs}) at {report.path}: "
        f"{report.files_written} files, {report.bytes_written} bytes written{kept}"
    )


def missing_repo_lines(missing: MissingRepo, most: int = 20) -> list[str]:
    revs = ", ".join(f"{n} -> {c[:12]}" for n, c in missing.revisions)
    needs = f"; needs {', '.join(missing.volumes)}" if missing.volumes else ""
    count = f"{len(missing.files)} file{'' if len(missing.files) == 1 else 's'}"
    out = [f"MISSING   {missing.repo} ({revs}): not imported, {count} not at hand{needs}"]
    out += [f"            {f.commit[:12]} {f.path}: {f.why}" for f in missing.files[:most]]
    if len(missing.files) > most:
        out.append(f"            and {len(missing.files) - most} more (--json lists them all)")
    return out


def import_report_lines(report: ImportReport) -> list[str]:
    if report.volumes:
        head = f"{report.bundle.name}: volumes {', '.join(report.volumes)} (set {report.bundle_id[:16]})"
    else:
        head = f"{report.bundle.name} (bundle id {report.bundle_id[:16]})"
    out = [head]
    if report.refused:
        out.append("  REFUSED   by the import's policy: nothing of the bundle was published")
    out += [f"  {repo_report_line(r)}" for r in report.repos]
    out += [f"  {line}" for r in report.revisions for line in scanned_revision_lines(r)]
    out += [f"  DAMAGED   {d}" for d in report.damaged]
    out += [f"  CORRUPT   {c}" for c in report.corrupt]
    out += [f"  {line}" for m in report.missing for line in missing_repo_lines(m)]
    out += [f"  KEPT      {k}" for k in report.kept]
    return out


# scan


def scanned_revision_lines(revision: ScannedRevision) -> list[str]:
    """scan: one revision's verdict, then each finding with its verdict and rule, what it refers to that is
    not here, and what could not be read."""
    verdict = revision.verdict
    state = "DENIED" if not verdict.ok else "ok"
    licences = ", ".join(revision.scan.licenses) or "none named"
    counts = f"{len(verdict.denied)} denied, {len(verdict.warned)} warned, {len(verdict.allowed)} allowed"
    out = [f"{state:<8}{revision.repo}@{revision.commit[:12]} (licence {licences}; {counts})"]
    for word, rulings in (
        ("denied", verdict.denied),
        ("warned", verdict.warned),
        ("allowed", verdict.allowed),
    ):
        out += [
            f"  {word:<8}{r.finding.path or '(revision)'}: {r.finding.detail} [{r.rule}]" for r in rulings
        ]
    out += [
        f"  missing auto_map refers to {repo}, which is not here: the model will not load offline"
        for repo in revision.missing_repos
    ]
    out += [f"  unread  {why}" for why in revision.unscanned]
    return out


def scan_lines(report: ScanReport) -> list[str]:
    """scan: every revision, the problems of the source, and a summary."""
    out = [line for r in report.revisions for line in scanned_revision_lines(r)]
    out += [f"PROBLEM {p}" for p in report.problems]
    denied = sum(1 for r in report.revisions if not r.verdict.ok)
    findings = sum(len(r.scan.findings) for r in report.revisions)
    state = "ok  " if report.ok else "DENIED  "
    out.append(
        f"{state}{report.scanned}: {len(report.revisions)} revision(s) scanned, {findings} finding(s), "
        f"{denied} revision(s) denied by the policy"
    )
    return out
