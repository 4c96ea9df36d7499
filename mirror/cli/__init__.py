"""The command line: parse options, read the environment once, call the engine, print results, exit.

This is the one place that prints and exits. Results go to stdout (`--json` for machines); logs and
progress bars go to stderr.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from mirror import __version__
from mirror.errors import DamagedBlobError, Interrupted, MirrorError
from mirror.printable import printable
from mirror.progress import VERBOSE, BarProgress, NullProgress, ProgressSink, wants_bar
from mirror.settings import Settings, hf_cache_dir, hf_symlinks_disabled, modelscope_cache_dir
from mirror.units import human_size

if TYPE_CHECKING:
    from mirror.sync import ItemResult

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("mirror")

EXIT_CODES_HELP = (
    "Exit codes: 0 ok (also nothing to do), 1 failure, 2 bad usage or invalid manifest, "
    "3 partial (some items failed, the rest were done), 4 integrity (hash or size mismatch, corrupt or "
    "hostile bundle), 75 another run holds the store lock, 130 stopped by Ctrl-C or SIGTERM."
)


# shared options ----------------------------------------------------------------------------------------
def store_option(fn: F) -> F:
    return click.option(
        "--store",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The store folder (default: $MIRROR_STORE, else $XDG_DATA_HOME/mirror, i.e. ~/.local/share/mirror).",
    )(fn)


def wait_option(what: str) -> Callable[[F], F]:
    """--wait SECONDS, for a command that takes a lock another run may hold."""
    return click.option(
        "--wait",
        default=0.0,
        metavar="SECONDS",
        type=click.FloatRange(0),
        help=f"Wait up to SECONDS for {what} (default: fail at once, exit 75).",
    )


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(fn)


def output_options(fn: F) -> F:
    """-v/-q/--no-progress, applied to logging once, before the command runs."""

    @click.option(
        "-v",
        "--verbose",
        count=True,
        help="More log lines on stderr (sync: each model revision's plan and outcome; -vv: debug, tracebacks).",
    )
    @click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Only errors on stderr, no progress bar; sync prints nothing at all when everything succeeded.",
    )
    @click.option(
        "--no-progress", is_flag=True, help="No progress bar (there is none off a terminal anyway)."
    )
    @wraps(fn)
    def wrapper(*args: Any, verbose: int, quiet: bool, no_progress: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        ctx.meta["verbose"] = verbose
        ctx.meta["quiet"] = quiet
        setup_logging(verbose, quiet)
        show = wants_bar(sys.stderr, quiet=quiet, no_progress=no_progress, env=os.environ)
        ctx.meta["progress"] = BarProgress(sys.stderr) if show else NullProgress()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, quiet: bool) -> None:
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


def progress() -> ProgressSink:
    sink: ProgressSink = click.get_current_context().meta.get("progress", NullProgress())
    return sink


def settings(store: Path | None) -> Settings:
    return Settings.from_env(store)


def emit(data: Any, as_json: bool, lines: Iterable[str]) -> None:
    """Print a result: JSON for machines, else the human lines (untrusted text escaped: see printable)."""
    if as_json:
        # ensure_ascii (the default) writes control characters and lone surrogates as \u escapes.
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        for line in lines:
            click.echo(printable(line))


def print_error(message: str) -> None:
    """The one-line human message of a failure, on stderr."""
    click.echo(printable(f"mirror: error: {message}"), err=True)


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
@click.option(
    "--retries",
    default=5,
    show_default=True,
    type=click.IntRange(1, 100),
    help="Attempts per request on connection errors, cut-off bodies, 5xx and 429.",
)
@click.option(
    "--retry-time",
    default=900.0,
    show_default=True,
    metavar="SECONDS",
    type=click.FloatRange(0),
    help="Give up retrying one request after this long.",
)
@json_option
@output_options
def sync(
    manifests: Sequence[str],
    store: Path | None,
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
    hub listing that cannot be a real tree is refused. Ctrl-C (or SIGTERM) stops within about a second:
    revisions complete by then are recorded, partial downloads are kept for the next run (exit 130).
    Endpoints come from HF_ENDPOINT (or a manifest's endpoint:), tokens from HF_TOKEN (or token_env:).
    """
    from mirror.fsutil import atomic_write_json
    from mirror.lockfile import read_lock, write_lock
    from mirror.manifest import load_manifests
    from mirror.retry import RetryPolicy
    from mirror.store import Store
    from mirror.sync import default_source_factory, locked_revisions, plan_locked, plan_targets
    from mirror.sync import sync as run_sync

    with report_failure(report):
        if not manifests and locked is None:
            raise click.UsageError("give at least one MANIFEST, or --locked LOCKFILE")
        targets = plan_targets(spec for m in load_manifests(manifests) for spec in m.models)
        if locked is not None:
            targets += plan_locked(read_lock(locked))
        cfg = settings(store)
        policy = RetryPolicy(attempts=retries, total=retry_time)
        with stop_on_signals(policy.stop):
            result = run_sync(
                Store(cfg.store),
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
    emit(summary, as_json, map(describe_item, result.failed if quiet else result.items))
    if policy.stop.is_set():
        exit_leaving_stuck_transfers(result.exit_code)
    if result.exit_code:
        raise SystemExit(result.exit_code)


@contextmanager
def report_failure(path: Path | None) -> Iterator[None]:
    """`sync --report`: whatever ends the run early (a bad manifest or lock file, the store lock held,
    Ctrl-C, a bug) is written to the report too, with its exit code and message, so that a monitor never
    reads the success of an earlier run."""
    try:
        yield
    except BaseException as e:
        if path is not None and not isinstance(e, SystemExit):
            from mirror.fsutil import atomic_write_json

            code, message, _ = failure_of(e)
            try:
                atomic_write_json(path, {"ok": False, "exit_code": code, "error": message, "items": []})
            except OSError as write_error:
                log.error("cannot write the report %s: %s", path, write_error)
        raise


def failure_of(error: BaseException) -> tuple[int, str, str]:
    """The exit code, message and kind (`--json`'s `type`) of the failure an exception ends a run with: the
    one mapping `main`, `--json` errors and `sync --report` share."""
    if isinstance(error, MirrorError):
        return error.exit_code, str(error), ERROR_TYPES.get(error.exit_code, "failure")
    if isinstance(error, click.ClickException):
        code = 2 if error.exit_code in (1, 2) else error.exit_code
        return code, error.format_message(), ERROR_TYPES.get(code, "failure")
    if isinstance(error, KeyboardInterrupt | click.exceptions.Abort):
        return Interrupted.exit_code, "interrupted", "interrupted"
    return 1, f"unexpected error: {type(error).__name__}: {error}", "unexpected"


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM ask the run to stop: `stop` is set and the engine winds down, keeping
    what is complete. A second signal stops at once (KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; the default ones stay
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("%s: stopping; press Ctrl-C again to stop at once", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def exit_leaving_stuck_transfers(code: int) -> None:
    """Exit after a stop. A transfer blocked in a read (a stalled hub) is not waited for: its bytes so far
    are on disk for the next run, and interpreter shutdown would wait for its thread forever."""
    sys.stdout.flush()
    sys.stderr.flush()
    deadline = time.monotonic() + 1.0
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()
    ):
        os._exit(code)
    raise SystemExit(code)


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("manifests", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@store_option
@click.option("--check-upstream", is_flag=True, help="Ask the hubs whether each revision has moved since.")
@json_option
@output_options
def status(manifests: Sequence[str], store: Path | None, check_upstream: bool, as_json: bool) -> None:
    """Per model revision (of the MANIFESTS, else of the whole store): the commit held, when it was
    synced, its files and size; with --check-upstream, whether upstream has moved."""
    from mirror.manifest import load_manifests
    from mirror.status import revision_status, store_targets
    from mirror.store import Store
    from mirror.sync import default_source_factory, plan_targets

    cfg = settings(store)
    st = Store(cfg.store)
    targets = (
        plan_targets(s for m in load_manifests(manifests) for s in m.models)
        if manifests
        else store_targets(st)
    )
    upstream = default_source_factory(cfg) if check_upstream else None
    rows = revision_status(st, targets, upstream=upstream)
    emit(
        [r.to_json() for r in rows],
        as_json,
        (
            f"{r.state:<15} {r.key}@{r.revision} {r.commit or '-'} {r.synced_at or ''} "
            f"{r.files} files {human_size(r.size)}"
            + (f" upstream {r.upstream}" if r.upstream and r.upstream != r.commit else "")
            + (f" ({r.error})" if r.error else "")
            for r in rows
        ),
    )
    if any(r.error for r in rows):
        raise SystemExit(3)


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
    manifests: Sequence[str], store: Path | None, locks: Sequence[Path], dry_run: bool, as_json: bool
) -> None:
    """Remove what nothing references any more.

    With MANIFESTS and/or --lock files, keeps only the revisions they name (as last synced) and removes
    every other revision record and every blob no kept snapshot uses. With neither, keeps every revision
    the store records and removes only unreferenced blobs.
    """
    from mirror.gc import collect_garbage, plan_keep
    from mirror.lockfile import read_lock
    from mirror.manifest import load_manifests
    from mirror.store import Store

    st = Store(settings(store).store)
    specs = [s for m in load_manifests(manifests) for s in m.models] if manifests or locks else None
    locked = [rev for lock in locks for rev in read_lock(lock)]
    # A dry run of a store that does not exist must not create it for the lock: there is nothing to remove.
    with st.lock() if st.root.is_dir() or not dry_run else nullcontext():
        result = collect_garbage(st, plan_keep(st, specs, locked), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    emit(
        result.to_json(),
        as_json,
        [
            *(f"{verb} revision {r}" for r in result.refs),
            *(f"{verb} snapshot {s}" for s in result.snapshots),
            *(f"{verb} blob {b}" for b in result.blobs),
            f"{verb} {len(result.blobs)} blobs, {human_size(result.bytes)}",
        ],
    )


@cli.command("export", epilog=EXIT_CODES_HELP)
@click.argument("manifests", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="OUT.tar.zst to write.",
)
@store_option
@click.option(
    "--level",
    type=click.IntRange(1, 22),
    help="zstd level for everything. Default: 1 for model weights (.safetensors, .bin, ...: level 1 packs "
    "them smallest and fastest), 3 for the rest.",
)
@click.option(
    "--threads",
    default=-1,
    show_default=True,
    type=int,
    help="zstd worker threads (-1: one per core). The bundle's bytes do not depend on it.",
)
@click.option(
    "--have",
    "have_files",
    multiple=True,
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A `mirror inventory` file from the far side (repeatable): pack only content it lacks (a delta); "
    "the index still describes every file.",
)
@click.option(
    "--since",
    "since_bundles",
    multiple=True,
    metavar="BUNDLE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An earlier bundle, or any volume of an earlier set (repeatable): what it packed counts as held "
    "by the far side (a delta). Only its index is read.",
)
@click.option(
    "--split",
    metavar="SIZE",
    help="Write self-contained volumes OUT.001.tar.zst, OUT.002.tar.zst, ... of at most SIZE each "
    "(K, M, G, T: powers of 1024, as GNU split; KB, MB, GB, TB: powers of 1000).",
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
    output: Path,
    store: Path | None,
    level: int | None,
    threads: int,
    have_files: Sequence[Path],
    since_bundles: Sequence[Path],
    split: str | None,
    sign_key: Path | None,
    sequence: int | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Pack the store (or just what the MANIFESTS name) into a checksummed .tar.zst bundle.

    Writes OUT.tar.zst and OUT.tar.zst.sha256 beside it. The same store content and options give a
    byte-identical bundle; its creation time is SOURCE_DATE_EPOCH when set, else the newest sync.
    With --have/--since, a delta: content the far side holds is described, not packed. With --split,
    volumes OUT.001.tar.zst ... that are each a bundle of their own. With --sign, also a .sig beside each
    (the bundles themselves stay byte-identical).
    """
    from mirror.export import Signer, export, far_side_holds
    from mirror.manifest import load_manifests
    from mirror.signing import load_private_key
    from mirror.store import Store
    from mirror.units import parse_duration, parse_size

    if sign_key is None and (sequence is not None or expires is not None):
        raise click.UsageError("--sequence and --expires need --sign KEY")
    try:
        lifetime = parse_duration(expires) if expires is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--expires") from None
    try:
        limit = parse_size(split) if split is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--split") from None
    signer = Signer(load_private_key(sign_key), sequence, lifetime) if sign_key is not None else None
    have = far_side_holds(have_files, since_bundles)
    specs = [s for m in load_manifests(manifests) for s in m.models] if manifests else None
    try:
        result = export(
            Store(settings(store).store),
            specs,
            output,
            level=level,
            threads=threads,
            have=have,
            split=limit,
            signer=signer,
            progress=progress(),
        )
    except DamagedBlobError as e:
        if not manifests:
            raise  # no manifest at hand: the error names the revisions to sync
        # a sync of the same manifests needs the blob, finds it in doubt and fetches it again
        command = shlex.join(["mirror", "sync", *manifests, *(["--store", str(store)] if store else [])])
        raise DamagedBlobError(e.detail, e.revisions, command, e.unmarked) from None
    data: dict[str, Any] = {} if not result.volumes else {"volumes": []}
    lines = []
    for bundle in result.bundles:
        summary, signed = bundle.summary, bundle.signature
        entry = summary.to_json()
        lines += [
            f"wrote {summary.path} ({human_size(summary.size)}, {summary.files} files of {summary.repos} repos)",
            f"sha256 {summary.sha256}",
        ]
        if signed is not None:
            entry["signature"] = signed.to_json()
            lines.append(f"signed {signed.path} ({signed.describe()})")
        if result.volumes:
            data["volumes"].append(entry)
        else:
            data.update(entry)
    if result.delta:
        elsewhere = result.left_to_target
        data["in_target"] = {"files": len(elsewhere), "bytes": sum(f.size for f in elsewhere)}
        lines.append(
            f"delta: {len(elsewhere)} files ({human_size(sum(f.size for f in elsewhere))}) left to the far side"
        )
    emit(data, as_json, lines)


KILL_AFTER_ENV = "MIRROR_TEST_KILL_AFTER"


def kill_hook(env: Mapping[str, str]) -> Callable[[], None]:
    """The import's step callback: `MIRROR_TEST_KILL_AFTER=N`, a hook for the tests only, makes the import
    SIGKILL itself at its N-th step (a file staged, a name published), so the tests can prove that a killed
    import never leaves a broken tree. Unset (always, outside the tests), it does nothing."""
    limit = int(env.get(KILL_AFTER_ENV) or 0)
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1
        if limit and steps >= limit:
            os.kill(os.getpid(), signal.SIGKILL)

    return step


@cli.command("import", epilog=EXIT_CODES_HELP)
@click.argument(
    "bundles", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--layout",
    type=click.Choice(["hf", "modelscope", "dir"]),
    default="hf",
    show_default=True,
    help="hf: the Hugging Face cache; modelscope: the ModelScope cache; dir: plain folders DIR/<repo_id>/ "
    "(other revisions DIR/<repo_id>@<rev>/). Repos from either hub go into any layout.",
)
@click.option(
    "--target",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write (hf default: where huggingface_hub looks, $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, "
    "else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub; modelscope "
    "default: $MODELSCOPE_CACHE, else ~/.cache/modelscope; dir: required).",
)
@click.option(
    "--trust",
    "trust_keys",
    multiple=True,
    metavar="PUBKEY",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Accept only bundles whose BUNDLE.sig verifies with this public key (repeatable); unsigned "
    "bundles are then refused too.",
)
@click.option(
    "--require-signature",
    is_flag=True,
    envvar="MIRROR_REQUIRE_SIGNATURE",
    show_envvar=True,
    help="Refuse to run without --trust, and every bundle without a valid signature.",
)
@click.option(
    "--no-symlinks",
    is_flag=True,
    help="hf layout: real files in snapshots/, each its own copy, and no blobs/, as huggingface_hub writes "
    "under HF_HUB_DISABLE_SYMLINKS (set to 1, ON, YES or TRUE, it implies this option), for file systems "
    "without symlinks.",
)
@click.option(
    "--link-shared",
    is_flag=True,
    help="Hardlink files of equal content across repos (and across revisions with --no-symlinks) to save "
    "space. Then editing one repo's file in place changes the others, and deleting a repo (hf cache rm) "
    "frees less than it reports. Default: each repo its own copy, as the hub clients keep them.",
)
@wait_option("another import into the same target")
@json_option
@output_options
def import_cmd(
    bundles: Sequence[Path],
    layout: str,
    target: Path | None,
    trust_keys: Sequence[Path],
    require_signature: bool,
    no_symlinks: bool,
    wait: float,
    link_shared: bool,
    as_json: bool,
) -> None:
    """Verify BUNDLES byte by byte, then restore them into a layout the hub clients load offline.

    Nothing of a bundle is published until every one of its members is verified (a damaged or hostile
    bundle leaves the target as it was, exit 4), and not without room for it; models already in the target
    that a bundle does not name are never touched. Volumes of a set (export --split) are taken together, in
    any order: repos whose files are all at hand are published, the others are named with the volumes they
    still need (exit 3); a damaged volume is named and not used (exit 4). A delta (export --have/--since)
    takes the files it leaves out from the target, hashed first; a repo the target lacks some of is not
    published, and named with those files (exit 3). With --trust, a bundle is accepted only if its .sig
    verifies with a trusted key, has not expired, and its sequence is not older than one already accepted.
    One import at a time per target: another one exits 75, or waits --wait SECONDS.
    """
    from mirror.cli.output import import_report_lines
    from mirror.importing import group_bundles, import_unit
    from mirror.signing import TrustPolicy, load_public_key

    trust = TrustPolicy(tuple(load_public_key(k) for k in trust_keys), required=require_signature)

    if target is None:
        if layout == "dir":
            raise click.UsageError("--layout dir needs --target DIR")
        target = hf_cache_dir(os.environ) if layout == "hf" else modelscope_cache_dir(os.environ)
    # As huggingface_hub: HF_HUB_DISABLE_SYMLINKS in the environment writes what --no-symlinks writes.
    symlinks = not (no_symlinks or (layout == "hf" and hf_symlinks_disabled(os.environ)))
    units = group_bundles(bundles)
    checkpoint = kill_hook(os.environ)
    reports = []
    errors: list[MirrorError] = []
    for unit in units:
        sink = progress()
        sink.start(sum(p.stat().st_size for p in unit.paths), f"import {unit.label}")
        try:
            reports.append(
                import_unit(
                    unit,
                    layout,
                    target,
                    progress=sink.update,
                    trust=trust,
                    symlinks=symlinks,
                    link_shared=link_shared,
                    wait=wait,
                    checkpoint=checkpoint,
                )
            )
        except MirrorError as e:
            if len(units) == 1:
                raise
            errors.append(e)  # each bundle or set is one unit: the others still import
        finally:
            sink.close()
    data: dict[str, Any] = {
        "target": str(target),
        "layout": layout,
        "bundles": [r.to_json() for r in reports],
    }
    if errors:
        data["errors"] = [str(error) for error in errors]
    emit(data, as_json, [line for r in reports for line in import_report_lines(r)])
    for error in errors:
        print_error(str(error))
    codes = [r.exit_code for r in reports] + [error.exit_code for error in errors]
    if any(codes):
        # Damage wins; otherwise what failed alone keeps its code, and failures beside successes are partial.
        raise SystemExit(4 if 4 in codes else codes[0] if len(set(codes)) == 1 else 3)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--layout",
    type=click.Choice(["hf", "modelscope", "dir"]),
    default="hf",
    show_default=True,
    help="The layout of the target, as `mirror import` wrote it (or the hub clients filled it).",
)
@click.option(
    "--target",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The tree to list (hf default: where huggingface_hub looks, as for import; modelscope default: "
    "$MODELSCOPE_CACHE, else ~/.cache/modelscope; dir: required).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="have.json to write (carry it to the connected side, for export --have).",
)
@json_option
@output_options
def inventory(layout: str, target: Path | None, output: Path, as_json: bool) -> None:
    """List what this (air-gapped) machine already holds: every content by sha256 and size, and its repos'
    revisions and commits, as a small JSON file for `mirror export --have`.

    sha256s come from the receipts `mirror import` left and from LFS blob names; other files (ordinary HF
    blobs, ModelScope's own downloads) are hashed. An absent target holds nothing.
    """
    from mirror.fsutil import atomic_write_bytes
    from mirror.inventory import take_inventory

    if target is None:
        if layout == "dir":
            raise click.UsageError("--layout dir needs --target DIR")
        target = hf_cache_dir(os.environ) if layout == "hf" else modelscope_cache_dir(os.environ)
    held, stats = take_inventory(layout, target, progress=progress())
    atomic_write_bytes(output, held.to_bytes())
    total = sum(held.blobs.values())
    emit(
        {
            "output": str(output),
            "target": str(target),
            "layout": layout,
            "blobs": len(held.blobs),
            "bytes": total,
            "repos": len(held.repos),
            "files": stats.files,
            "hashed_files": stats.hashed,
            "hashed_bytes": stats.hashed_bytes,
        },
        as_json,
        [
            f"wrote {output}: {len(held.blobs)} contents ({human_size(total)}) of {len(held.repos)} repos in "
            f"{target}; hashed {stats.hashed} of {stats.files} files ({human_size(stats.hashed_bytes)})"
        ],
    )


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
    emit(
        keys.to_json(),
        as_json,
        [
            f"private key {keys.private_key} (keep it on the connected side; mode 0600)",
            f"public key  {keys.public_key} (copy it to the air-gapped side, for import --trust)",
            f"key id      {keys.key_id}",
        ],
    )


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def inspect(bundle: Path, as_json: bool) -> None:
    """Show what BUNDLE holds (reads only its index)."""
    from mirror.bundle import describe_index, read_index

    data = describe_index(read_index(bundle))
    emit(data, as_json, describe_bundle(data))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("bundles", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@store_option
@click.option(
    "--target",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Re-hash a tree `mirror import` wrote (default with --layout: where import writes) against the "
    "receipts it left; name every file changed or missing.",
)
@click.option(
    "--layout",
    type=click.Choice(["hf", "modelscope", "dir"]),
    default=None,
    help="The layout of --target (default: hf).",
)
@json_option
@output_options
def verify(
    bundles: Sequence[Path], store: Path | None, target: Path | None, layout: str | None, as_json: bool
) -> None:
    """Re-hash the store, the BUNDLES, or an imported tree (--target), offline; name anything that does
    not match. A damaged blob of the store is marked, so the next sync that needs it fetches it again."""
    from mirror.store import Store
    from mirror.verify import verify_store, verify_target

    results: list[dict[str, Any]] = []
    if target is not None or layout is not None:
        if bundles or store is not None:
            raise click.UsageError("--target/--layout verify an imported tree: give no BUNDLE or --store")
        layout = layout or "hf"
        if target is None:
            if layout == "dir":
                raise click.UsageError("--layout dir needs --target DIR")
            target = hf_cache_dir(os.environ) if layout == "hf" else modelscope_cache_dir(os.environ)
        checked = verify_target(layout, target, progress=progress())
        if not checked.ok:
            emit([checked.to_json()], as_json, checked.problems)
            raise SystemExit(4)
        emit(
            [checked.to_json()],
            as_json,
            [*checked.removed, f"ok  {target} ({checked.files} files, {human_size(checked.bytes)})"],
        )
        return
    if bundles:
        from mirror.bundle import verify_bundle

        sink = progress()
        for bundle in bundles:
            sink.start(bundle.stat().st_size, f"verify {bundle.name}")
            try:
                verified = verify_bundle(bundle, progress=sink.update)
            finally:
                sink.close()
            results.append(
                {
                    "bundle": str(bundle),
                    "ok": True,
                    "repos": len(verified.index.repos),
                    "sha256": verified.sha256,
                    "transfer_checked": verified.transfer_checked,
                }
            )
    else:
        result = verify_store(Store(settings(store).store), progress=progress())
        results.append(result.to_json())
        if not result.ok:
            emit(results, as_json, result.problems)
            raise SystemExit(4)
    emit(results, as_json, map(describe_verified, results))


def describe_verified(result: dict[str, Any]) -> str:
    if "bundle" not in result:
        return f"ok  {result['store']}"
    if result["transfer_checked"]:
        return f"ok  {result['bundle']} (sha256 {result['sha256']}, as its .sha256 says)"
    return (
        f"ok  {result['bundle']} (sha256 {result['sha256']}; no .sha256 beside it: the transfer digest was "
        "not checked, compare it with the one written on export)"
    )


def describe_item(item: ItemResult) -> str:
    if item.error:
        return f"FAILED  {item.target}: {item.error}"
    return (
        f"ok      {item.target} -> {item.commit} ({len(item.records)} files, {item.downloaded} downloaded, "
        f"{human_size(item.bytes_downloaded)})"
    )


def describe_bundle(data: dict[str, Any]) -> list[str]:
    lines = [
        f"mirror bundle v{data['format_version']}, made {data['created']} by mirror {data['tool_version']}"
    ]
    for repo in data["repos"]:
        lines.append(f"{repo['source']}:{repo['repo_id']} ({repo['repo_type']})")
        for rev in repo["revisions"]:
            lines.append(f"  {rev['name']} -> {rev['commit']}")
        for c in repo["commits"]:
            lines.append(f"  {c['commit']}: {c['files']} files, {human_size(c['bytes'])}")
    if "volume_set" in data:
        names = data["volume_set"]["names"]
        lines.append(f"volume {data['volume_set']['volume']} of {len(names)}: {', '.join(names)}")
    if "in_target" in data:
        elsewhere = data["in_target"]
        lines.append(
            f"delta: {elsewhere['files']} files ({human_size(elsewhere['bytes'])}) are left to the target"
        )
    lines.append(f"total {human_size(data['total_bytes'])}, unique {human_size(data['unique_bytes'])}")
    return lines


# What --json names each failure, by exit code; see README "Exit codes".
ERROR_TYPES = {1: "failure", 2: "usage", 3: "partial", 4: "integrity", 75: "locked", 130: "interrupted"}


def wants_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for --json (an option before any `--`), also when it fails to parse."""
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def fail(
    args: Sequence[str], code: int, message: str, *, kind: str | None = None, shown: str | None = None
) -> NoReturn:
    """End the run on a failure: the human message on stderr (`shown`, else one line), with --json also
    `{"error": {"exit_code", "type", "message"}}` on stdout; exit `code`."""
    # The message is escaped whole first: a CR or LF in a name it holds must not start a line of its own.
    if shown is None:
        lines = [f"mirror: error: {message}"]
    else:
        lines = shown.replace(message, printable(message)).rstrip("\n").split("\n")
    for line in lines:
        click.echo(printable(line), err=True)
    if wants_json(args):
        error = {"exit_code": code, "type": kind or ERROR_TYPES.get(code, "failure"), "message": message}
        click.echo(json.dumps({"error": error}, indent=2))
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: the one place where errors become messages and exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rc = cli.main(args=args, prog_name="mirror", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as e:  # the one boundary where every failure becomes an exit code
        code, message, kind = failure_of(e)
        shown = None
        if isinstance(e, click.ClickException):
            out = io.StringIO()
            e.show(file=out)
            shown = out.getvalue()
        elif kind == "interrupted":
            shown = message
        elif log.isEnabledFor(logging.DEBUG):
            log.exception("details")
        if kind == "unexpected":
            shown = f"mirror: {message} (run with -vv for details)"
        fail(args, code, message, kind=kind, shown=shown)
    sys.exit(rc if isinstance(rc, int) else 0)
