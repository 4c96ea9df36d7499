"""`mirror scan`: the validation checks run offline on a store, bundles or an imported tree, judged by the
default policy or `--policy FILE` (the engine is `mirror.scanning`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mirror.cli.exits import EXIT_CODES_HELP
from mirror.cli.options import (
    json_option,
    open_store,
    output_options,
    policy_option,
    read_policy,
    resolve_target,
    settings,
    source_options,
    tree_layout,
)
from mirror.cli.output import emit, scan_lines
from mirror.exits import ExitCode
from mirror.settings import StoreName, local_target

if TYPE_CHECKING:
    from mirror.bundle.location import BundlePath

SCAN_EXITS = (
    "mirror scan exits 0 when the policy denies nothing, 4 when it denies anything (an unsafe or invalid "
    "file, as a corrupt or hostile bundle), 1 on a failure (an unreachable bucket), 2 on bad usage. "
)


@click.command(epilog=SCAN_EXITS + EXIT_CODES_HELP)
@source_options(
    target_help="Scan the revisions a `mirror import` wrote there (default with --layout: where import "
    "writes), as its receipts list them."
)
@policy_option("Judge each revision")
@json_option
@output_options
def scan(
    bundles: Sequence[BundlePath],
    store: StoreName | None,
    target: StoreName | None,
    layout: str | None,
    policy_file: Path | None,
    as_json: bool,
) -> None:
    """Run the validation checks offline (safetensors/GGUF/ONNX headers, pickles, remote code, licence,
    size) on every revision the store records (default), the BUNDLES hold (files or s3://BUCKET/KEY objects,
    streamed once and verified as read), or an imported tree (--layout/--target), and judge them by the
    policy. Each revision's findings are shown with their verdict and rule."""
    from mirror.scanning import scan_bundles, scan_store, scan_target

    policy = read_policy(policy_file)
    layout = tree_layout(bundles, store, target, layout, "scan")
    if layout is not None:
        where = resolve_target(layout, target)
        if layout == "store":
            report = scan_store(open_store(where), policy)
        else:
            report = scan_target(layout, local_target(where), policy)
    elif bundles:
        if store is not None:
            raise click.UsageError("give BUNDLE or --store, not both")
        report = scan_bundles(bundles, policy)
    else:
        report = scan_store(open_store(settings(store).store), policy)
    emit(report, as_json, scan_lines(report))
    if not report.ok:
        raise SystemExit(ExitCode.INTEGRITY)
