"""Human output of the commands: the lines they print for what the library returns."""

from __future__ import annotations

from mirror.report import ImportReport, MissingRepo, RepoReport

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
    out = [head] + [f"  {repo_report_line(r)}" for r in report.repos]
    out += [f"  DAMAGED   {d}" for d in report.damaged]
    out += [f"  CORRUPT   {c}" for c in report.corrupt]
    out += [f"  {line}" for m in report.missing for line in missing_repo_lines(m)]
    out += [f"  KEPT      {k}" for k in report.kept]
    return out
