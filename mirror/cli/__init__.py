"""The command line: the `mirror` group, the commands of the connected side (sync, status, gc, export,
keygen; the air-gapped side's are in `airgapped`), and `main`, where every failure becomes an exit code.

mirror/cli is the one place that prints, exits and reads the environment: each command parses its
options, calls the library once and prints the result (`output`). Results go to stdout (`--json` for
machines); logs and progress bars go to stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mirror import __version__
from mirror.cli import airgapped
from mirror.cli.exits import (
    EXIT_CODES_HELP,
    exit_leaving_stuck_transfers,
    fail_on,
    report_failure,
    stop_on_signals,
)
from mirror.cli.options import (
    BUNDLE,
    NEW_BUNDLE,
    files_option,
    json_option,
    open_store,
    output_file_option,
    output_options,
    progress,
    retry_options,
    settings,
    store_option,
    threads_option,
    wait_option,
)
from mirror.cli.output import (
    describe_items,
    emit,
    export_lines,
    gc_lines,
    keygen_lines,
    status_line,
)
from mirror.cli.scan import scan as scan_cmd
from mirror.cli.serve import serve as serve_cmd
from mirror.errors import DamagedBlobError
from mirror.exits import ExitCode
from mirror.settings import StoreName

if TYPE_CHECKING:
    from mirror.bundle.location import BundlePath

log = logging.getLogger(__name__)


# the commands ----------------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="mirror")
def cli() -> None:
    """Mirror models from the Hugging Face Hub and ModelScope to machines without internet.

    \b
    On the connected side:   mirror sync manifest.yml
                             mirror export manifest.yml -o models.tar.zst
    On the air-gapped side:  mirror import models.tar.zst
    """


@cli.command(epilog=EXIT_CODES_HELP)
# not exists=True: a missing manifest is read, and reported in --report, as any other bad manifest
@click.argument("manifests", nargs=-1, type=click.Path(dir_okay=False))
@store_option
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64), help="Files in flight.")
@click.option(
    "--segments",
    default=8,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Ranged connections per large file (files of 32 MiB and more, in 16 MiB pieces); 1: one stream.",
)
@wait_option("another run's store lock")
@click.option(
    "--lock-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the resolved commit and every file's sha256 of each model revision to this file.",
)
@click.option(
    "--locked",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Sync exactly the commits and files a lock file recorded (instead of, or with, MANIFESTS).",
)
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the --json summary to this file (atomically), for monitoring: always, whatever ends the "
    "run (a bad manifest, the lock held, Ctrl-C), with its exit_code and error.",
)
@retry_options
@json_option
@output_options
def sync(
    manifests: Sequence[str],
    store: StoreName | None,
    workers: int,
    segments: int,
    wait: float,
    lock_file: Path | None,
    locked: Path | None,
    report: Path | None,
    retries: int,
    retry_time: float,
    as_json: bool,
) -> None:
    """Download what the MANIFESTS (or a --locked file) name into the store.

    Each revision is resolved to a commit, every file is checked against the hub's own hash while it
    streams (sha256 for LFS files, git blob sha1 for the others), and only what the store lacks is fetched.
    Each model revision succeeds or fails on its own (exit 3 when some failed), whatever its error, and a
    hub listing that cannot be a real tree is refused. Each revision, once its files are in, is scanned (the
    checks of `mirror scan` and the hub's own scan), the scan recorded in the store, and judged by its
    manifest's policy: a revision the policy denies fails alone, its revision names not moved. Ctrl-C (or SIGTERM) stops within about a second:
    revisions complete by then are recorded, partial downloads are kept for the next run (exit 130).
    Endpoints come from HF_ENDPOINT (or a manifest's endpoint:), tokens from HF_TOKEN (or token_env:).
    """
    from mirror.clock import SYSTEM
    from mirror.fsutil import atomic_write_json
    from mirror.lockfile import read_lock, write_lock
    from mirror.manifest import load_requests
    from mirror.retry import RetryPolicy
    from mirror.sync import default_source_factory, locked_revisions, plan_locked, plan_targets
    from mirror.sync import sync as run_sync

    with report_failure(report):
        if not manifests and locked is None:
            raise click.UsageError("give at least one MANIFEST, or --locked LOCKFILE")
        targets = plan_targets(load_requests(manifests))
        if locked is not None:
            targets += plan_locked(read_lock(locked))
        cfg = settings(store)
        policy = RetryPolicy(clock=SYSTEM, attempts=retries, total=retry_time)
        with stop_on_signals(policy.stop):
            result = run_sync(
                open_store(cfg.store),
                targets,
                default_source_factory(cfg),
                workers=workers,
                segments=segments,
                policy=policy,
                progress=progress(),
                wait=wait,
            )
        summary = result.to_json()
        if report is not None:
            atomic_write_json(report, summary)
        if lock_file is not None:
            write_lock(lock_file, locked_revisions(result))
    quiet = click.get_current_context().meta.get("quiet", False)
    emit(summary, as_json, describe_items(result.failed if quiet else result.items))
    if policy.stop.is_set():
        exit_leaving_stuck_transfers(result.exit_code)
    if result.exit_code:
        raise SystemExit(result.exit_code)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("manifests", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@store_option
@click.option("--check-upstream", is_flag=True, help="Ask the hubs whether each revision has moved since.")
@json_option
@output_options
def status(manifests: Sequence[str], store: StoreName | None, check_upstream: bool, as_json: bool) -> None:
    """Per model revision (of the MANIFESTS, else of the whole store): the commit held, when it was
    synced, its files and size; with --check-upstream, whether upstream has moved."""
    from mirror.clock import SYSTEM
    from mirror.manifest import load_requests
    from mirror.retry import RetryPolicy
    from mirror.status import revision_status, store_targets
    from mirror.sync import default_source_factory, plan_targets

    cfg = settings(store)
    st = open_store(cfg.store)
    targets = plan_targets(load_requests(manifests)) if manifests else store_targets(st)
    upstream = (default_source_factory(cfg), RetryPolicy(clock=SYSTEM)) if check_upstream else None
    rows = revision_status(st, targets, upstream=upstream)
    emit(rows, as_json, map(status_line, rows))
    if any(r.error for r in rows):
        raise SystemExit(ExitCode.PARTIAL)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("manifests", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@store_option
@click.option(
    "--lock",
    "locks",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A lock file whose commits are kept too (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@json_option
@output_options
def gc(
    manifests: Sequence[str], store: StoreName | None, locks: Sequence[Path], dry_run: bool, as_json: bool
) -> None:
    """Remove what nothing references any more.

    With MANIFESTS and/or --lock files, keeps only the revisions they name (as last synced) and removes
    every other revision record and every blob no kept snapshot uses. With neither, keeps every revision
    the store records and removes only unreferenced blobs.
    """
    from mirror.gc import collect_garbage, plan_keep
    from mirror.lockfile import read_lock
    from mirror.manifest import load_requests
    from mirror.storage.base import MISSING

    st = open_store(settings(store).store)
    requests = load_requests(manifests) if manifests or locks else None
    locked = [rev for lock in locks for rev in read_lock(lock)]
    # A dry run of a store that does not exist must not create it for the lock: there is nothing to remove.
    with st.lock() if not dry_run or st.problem() != MISSING else nullcontext():
        result = collect_garbage(st, plan_keep(st, requests, locked), dry_run=dry_run)
    emit(result, as_json, gc_lines(result))


@cli.command("export", epilog=EXIT_CODES_HELP)
@click.argument("manifests", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@output_file_option("OUT.tar.zst to write: a file, or an object s3://BUCKET/KEY.tar.zst.", NEW_BUNDLE)
@store_option
@click.option(
    "--level",
    type=click.IntRange(1, 22),
    help="zstd level for everything. Default: 1 for model weights (.safetensors, .bin, ...: level 1 packs "
    "them smallest and fastest), 3 for the rest.",
)
@threads_option("compress the bundle's zstd frames; the bundle's bytes do not depend on N")
@files_option(
    "--have",
    "have_files",
    "FILE",
    "A `mirror inventory` file from the far side (repeatable): pack only content it lacks (a delta); "
    "the index still describes every file.",
)
@files_option(
    "--since",
    "since_bundles",
    "BUNDLE",
    "An earlier bundle (a file or an s3:// URL), or any volume of an earlier set (repeatable): what it "
    "packed counts as held by the far side (a delta). Only its index is read.",
    BUNDLE,
)
@click.option(
    "--split",
    metavar="SIZE",
    help="Write self-contained volumes OUT.001.tar.zst, OUT.002.tar.zst, ... of at most SIZE each "
    "(K, M, G, T: powers of 1024, as GNU split; KB, MB, GB, TB: powers of 1000).",
)
@click.option(
    "--codec",
    type=click.Choice(["zstd", "bytegroup"]),  # mirror.bundle.bytegroup.CODECS, unimported until export runs
    default="zstd",
    show_default=True,
    help="How file members are packed. bytegroup: the BF16/F16 tensors of .safetensors files grouped by "
    "byte (high bytes, then low bytes) before zstd: bf16 weights pack to 0.67 of their size instead of 0.78. "
    "Those members then need `mirror import` (or verify, scan) to be restored; `tar --zstd` still lists "
    "and extracts the bundle. Not with --split.",
)
@click.option(
    "--sign",
    "sign_key",
    metavar="KEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Sign the bundle's index with this private key (from `mirror keygen`) into OUT.tar.zst.sig.",
)
@click.option(
    "--sequence",
    type=click.IntRange(0, (1 << 63) - 1),
    help="The signature's sequence number (default: the signing time in unix seconds). Needs --sign.",
)
@click.option(
    "--expires",
    metavar="DURATION",
    help="The signature expires this long after signing: a number with a unit s, m, h or d (30d). "
    "Needs --sign.",
)
@json_option
@output_options
def export_cmd(
    manifests: Sequence[str],
    output: BundlePath,
    store: StoreName | None,
    level: int | None,
    threads: int,
    have_files: Sequence[Path],
    since_bundles: Sequence[BundlePath],
    split: str | None,
    codec: str,
    sign_key: Path | None,
    sequence: int | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Pack the store (or just what the MANIFESTS name) into a checksummed .tar.zst bundle.

    Writes OUT.tar.zst and OUT.tar.zst.sha256 beside it; OUT may be an s3://BUCKET/KEY.tar.zst URL, and
    then everything goes straight to the bucket, beside it (a streamed multipart upload that appears whole
    or not at all). The same store content and options give a byte-identical bundle; its creation time is
    SOURCE_DATE_EPOCH when set, else the newest sync.
    With --have/--since, a delta: content the far side holds is described, not packed. With --split,
    volumes OUT.001.tar.zst ... that are each a bundle of their own. With --sign, also a .sig beside each
    (the bundles themselves stay byte-identical).
    """
    from mirror.clock import SYSTEM
    from mirror.export import Signer, export, far_side_holds
    from mirror.manifest import load_requests
    from mirror.signing import load_private_key
    from mirror.units import parse_duration, parse_size

    if sign_key is None and (sequence is not None or expires is not None):
        raise click.UsageError("--sequence and --expires need --sign KEY")
    if codec != "zstd" and split is not None:
        raise click.UsageError(f"--codec {codec} cannot make volumes: export with --split or with --codec")
    try:
        lifetime = parse_duration(expires) if expires is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--expires") from None
    try:
        limit = parse_size(split) if split is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--split") from None
    signer = (
        Signer(load_private_key(sign_key), sequence, lifetime, clock=SYSTEM) if sign_key is not None else None
    )
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    have = far_side_holds(have_files, since_bundles)
    requests = load_requests(manifests) if manifests else None
    try:
        result = export(
            open_store(settings(store).store),
            requests,
            output,
            level=level,
            threads=threads,
            have=have,
            split=limit,
            created=int(epoch) if epoch else None,
            signer=signer,
            progress=progress(),
            codec=None if codec == "zstd" else codec,
        )
    except DamagedBlobError as e:
        if not manifests:
            raise  # no manifest at hand: the error names the revisions to sync
        # a sync of the same manifests needs the blob, finds it in doubt and fetches it again
        command = shlex.join(["mirror", "sync", *manifests, *(["--store", str(store)] if store else [])])
        raise DamagedBlobError(e.detail, e.revisions, command, e.unmarked) from None
    emit(result, as_json, export_lines(result))


@cli.command(epilog=EXIT_CODES_HELP)
@click.option(
    "-o",
    "--output",
    "prefix",
    default="mirror-signing",
    show_default=True,
    metavar="PREFIX",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write PREFIX.key (private, mode 0600) and PREFIX.pub (public); never overwrites.",
)
@json_option
def keygen(prefix: Path, as_json: bool) -> None:
    """Make an Ed25519 key pair to sign bundles with (`export --sign`, `import --trust`)."""
    from mirror.signing import keygen as make_keys

    keys = make_keys(prefix)
    emit(keys, as_json, keygen_lines(keys))


for command in (*airgapped.COMMANDS, scan_cmd, serve_cmd):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: the one place where errors become messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    if stats_file := os.environ.get("MIRROR_THREAD_STATS"):  # the benchmark's per-thread CPU (bench/README)
        from mirror import threadstats

        threadstats.install(stats_file)
    try:
        rc = cli.main(args=args, prog_name="mirror", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the one boundary where every failure becomes an exit code
        fail_on(args, e)
    sys.exit(rc if isinstance(rc, int) else 0)
