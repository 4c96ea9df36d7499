"""The commands of the air-gapped side: import bundles into a layout the hub clients load, list what a
target holds (inventory), inspect a bundle, and verify bundles, the store or an imported tree."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mirror.cli.exits import EXIT_CODES_HELP
from mirror.cli.options import (
    BUNDLE,
    DEFAULT_TARGETS,
    files_option,
    json_option,
    layout_options,
    open_store,
    output_file_option,
    output_options,
    policy_option,
    progress,
    read_policy,
    resolve_target,
    settings,
    source_options,
    threads_option,
    tree_layout,
    wait_option,
)
from mirror.cli.output import (
    describe_bundle,
    describe_verified,
    emit,
    import_report_lines,
    inventory_line,
    print_error,
    store_lines,
    target_lines,
)
from mirror.errors import MirrorError
from mirror.exits import ExitCode
from mirror.settings import StoreName, hf_symlinks_disabled, local_target

if TYPE_CHECKING:
    from mirror.bundle.location import BundlePath

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


@click.command("import", epilog=EXIT_CODES_HELP)
@click.argument("bundles", nargs=-1, required=True, type=BUNDLE)
@layout_options(
    layout_help="hf: the Hugging Face cache; modelscope: the ModelScope cache; dir: plain folders "
    "DIR/<repo_id>/ (other revisions DIR/<repo_id>@<rev>/); store: a mirror store, as `mirror sync` writes "
    "it (for `mirror serve`, or to export again). Repos from either hub go into any layout.",
    target_help=f"Where to write ({DEFAULT_TARGETS}).",
)
@files_option(
    "--trust",
    "trust_keys",
    "PUBKEY",
    "Accept only bundles whose BUNDLE.sig verifies with this public key (repeatable); unsigned "
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
@threads_option("decompress the bundle's zstd frames")
@policy_option(
    "Judge every revision of the bundles (the far side's own rules: the near side's are never taken; an "
    "invalid safetensors/GGUF/ONNX header is always refused)"
)
@json_option
@output_options
def import_cmd(
    bundles: Sequence[BundlePath],
    layout: str,
    target: StoreName | None,
    trust_keys: Sequence[Path],
    require_signature: bool,
    no_symlinks: bool,
    wait: float,
    link_shared: bool,
    threads: int,
    policy_file: Path | None,
    as_json: bool,
) -> None:
    """Verify BUNDLES (files, or s3://BUCKET/KEY objects read streaming) byte by byte, then restore them
    into a layout the hub clients load offline.

    Nothing of a bundle is published until every one of its members is verified (a damaged or hostile
    bundle leaves the target as it was, exit 4), and not without room for it; models already in the target
    that a bundle does not name are never touched. Volumes of a set (export --split) are taken together, in
    any order: repos whose files are all at hand are published, the others are named with the volumes they
    still need (exit 3); a damaged volume is named and not used (exit 4). A delta (export --have/--since)
    takes the files it leaves out from the target, hashed first; a repo the target lacks some of is not
    published, and named with those files (exit 3). With --trust, a bundle is accepted only if its .sig
    verifies with a trusted key, has not expired, and its sequence is not older than one already accepted.
    Before anything is published, every revision is scanned here (headers, pickles, remote code, licence,
    size) and judged by --policy FILE (default: the default policy): one it denies refuses the whole bundle
    (or the volumes given of a set), nothing is published (exit 4), and every file, finding and rule is
    named; warnings are shown. One import at a time per target: another one exits 75, or waits --wait
    SECONDS.
    """
    from mirror.bundle import location
    from mirror.clock import SYSTEM
    from mirror.importing import PolicyRefused, group_bundles, import_unit
    from mirror.report import ImportRun
    from mirror.signing import TrustPolicy, load_public_key

    policy = read_policy(policy_file)
    trust = TrustPolicy(
        tuple(load_public_key(k) for k in trust_keys), required=require_signature, clock=SYSTEM
    )

    where = resolve_target(layout, target)  # a folder; for --layout store, also an s3:// URL
    # As huggingface_hub: HF_HUB_DISABLE_SYMLINKS in the environment writes what --no-symlinks writes.
    symlinks = not (no_symlinks or (layout == "hf" and hf_symlinks_disabled(os.environ)))
    units = group_bundles(bundles)
    checkpoint = kill_hook(os.environ)
    reports = []
    errors: list[MirrorError] = []
    for unit in units:
        sink = progress()
        sink.start(sum(location.size(p) for p in unit.paths), f"import {unit.label}")
        try:
            reports.append(
                import_unit(
                    unit,
                    layout,
                    where,
                    progress=sink.update,
                    trust=trust,
                    symlinks=symlinks,
                    link_shared=link_shared,
                    wait=wait,
                    clock=SYSTEM,
                    checkpoint=checkpoint,
                    policy=policy,
                    threads=threads,
                )
            )
        except PolicyRefused as e:  # reported like an import (each revision's verdict), and exit 4
            reports.append(e.report)
            errors.append(e)
        except MirrorError as e:
            if len(units) == 1:
                raise
            errors.append(e)  # each bundle or set is one unit: the others still import
        finally:
            sink.close()
    run = ImportRun(where, layout, tuple(reports), tuple(errors))
    emit(run, as_json, [line for r in reports for line in import_report_lines(r)])
    for error in errors:
        print_error(str(error))
    if run.exit_code:
        raise SystemExit(run.exit_code)


@click.command(epilog=EXIT_CODES_HELP)
@layout_options(
    layout_help="The layout of the target, as `mirror import` wrote it (or the hub clients filled it).",
    target_help=f"The tree to list ({DEFAULT_TARGETS}).",
)
@output_file_option("have.json to write (carry it to the connected side, for export --have).")
@json_option
@output_options
def inventory(layout: str, target: StoreName | None, output: Path, as_json: bool) -> None:
    """List what this (air-gapped) machine already holds: every content by sha256 and size, and its repos'
    revisions and commits, as a small JSON file for `mirror export --have`.

    sha256s come from the receipts `mirror import` left and from LFS blob names; other files (ordinary HF
    blobs, ModelScope's own downloads) are hashed. An absent target holds nothing.
    """
    from mirror.inventory import write_inventory

    written = write_inventory(layout, resolve_target(layout, target), output, progress=progress())
    emit(written, as_json, [inventory_line(written)])


INSPECT_EXITS = (
    "mirror inspect exits 0 when the policy denies nothing the bundle carries, 4 when it denies anything (as "
    "`mirror scan`), or when the bundle's index is damaged. "
)


@click.command(epilog=INSPECT_EXITS + EXIT_CODES_HELP)
@click.argument("bundle", type=BUNDLE)
@policy_option("Judge each commit's scan the bundle carries")
@json_option
def inspect(bundle: BundlePath, policy_file: Path | None, as_json: bool) -> None:
    """Show what BUNDLE (a file, or an s3://BUCKET/KEY object) holds (reads only its index): per repo and
    commit, its files, the findings of the scan the bundle carries (file, kind, detail) and the verdict of
    the policy on each, its licences and the repos its code refers to, so a reviewer can approve the bundle
    before it is imported. A bundle older than format 1.2 carries no scan: its commits show "not scanned"
    (`mirror scan BUNDLE` reads every byte and scans them)."""
    from mirror.bundle import describe_index, judge_index, read_index

    index = read_index(bundle)
    judged = judge_index(index, read_policy(policy_file))
    data = describe_index(index, judged)
    emit(data, as_json, describe_bundle(data, judged))
    if not data["ok"]:
        raise SystemExit(ExitCode.INTEGRITY)


@click.command(epilog=EXIT_CODES_HELP)
@source_options(
    target_help="Re-hash a tree `mirror import` wrote (default with --layout: where import writes) against "
    "the receipts it left; name every file changed or missing."
)
@json_option
@output_options
def verify(
    bundles: Sequence[BundlePath],
    store: StoreName | None,
    target: StoreName | None,
    layout: str | None,
    as_json: bool,
) -> None:
    """Re-hash the store, the BUNDLES (files, or s3://BUCKET/KEY objects read streaming), or an imported
    tree (--target), offline; name anything that does not match. A damaged blob of the store is marked, so
    the next sync that needs it fetches it again."""
    from mirror.verify import verify_bundles, verify_store, verify_target

    layout = tree_layout(bundles, store, target, layout, "verify")
    if layout is not None:
        checked = verify_target(layout, local_target(resolve_target(layout, target)), progress=progress())
        emit([checked], as_json, target_lines(checked))
        if not checked.ok:
            raise SystemExit(ExitCode.INTEGRITY)
    elif bundles:
        checks = verify_bundles(bundles, progress=progress())
        emit(checks, as_json, map(describe_verified, checks))
    else:
        result = verify_store(open_store(settings(store).store), progress=progress())
        emit([result], as_json, store_lines(result))
        if not result.ok:
            raise SystemExit(ExitCode.INTEGRITY)


COMMANDS = (import_cmd, inventory, inspect, verify)
