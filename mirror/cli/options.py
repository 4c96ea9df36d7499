"""The options several commands share, as decorators, and what the CLI reads from the environment for them
(the store, the default target of a layout)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mirror.cli.output import setup_logging
from mirror.errors import UsageError
from mirror.objects import ObjectPath
from mirror.progress import BarProgress, NullProgress, ProgressSink, wants_bar
from mirror.s3 import is_s3_url, parse_s3_url
from mirror.settings import Settings, StoreName, default_target, store_name

if TYPE_CHECKING:
    from mirror.store import Store
    from mirror.validate.policy import Policy

F = TypeVar("F", bound=Callable[..., Any])

# The layouts' names, as `mirror.layouts.LAYOUTS` holds them (a test keeps the two equal; importing the
# layouts here would slow every command's start).
LAYOUT_NAMES = ("hf", "modelscope", "dir", "store")

DEFAULT_TARGETS = (
    "hf default: where huggingface_hub looks, $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, "
    "else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub; modelscope default: "
    "$MODELSCOPE_CACHE, else ~/.cache/modelscope; dir: required; store: $MIRROR_STORE, else "
    "$XDG_DATA_HOME/mirror"
)


class BundleType(click.ParamType[Any, Any]):
    """A bundle on the command line: a file (that exists, for one to read), or an object in a bucket
    (`s3://bucket/key`, read or written there)."""

    name = "bundle"

    def __init__(self, *, exists: bool) -> None:
        self._local = click.Path(exists=exists, dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Path | ObjectPath):
            return value
        if is_s3_url(value):
            try:
                return ObjectPath.parse(value)
            except UsageError as e:
                self.fail(str(e), param, ctx)
        return self._local.convert(value, param, ctx)


BUNDLE = BundleType(exists=True)  # a bundle to read
NEW_BUNDLE = BundleType(exists=False)  # a bundle to write


class StoreParam(click.ParamType):  # type: ignore[type-arg, unused-ignore]
    """A store: a folder (a Path), or an s3://bucket/prefix URL kept as text (a Path would lose a "/")."""

    name = "store"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> StoreName:
        try:
            name = value if isinstance(value, Path) else store_name(str(value))
            if isinstance(name, str):
                parse_s3_url(name)  # a bad URL is refused here, naming the option, not later
                return name
        except UsageError as e:
            self.fail(str(e), param, ctx)
        folder: Path = click.Path(file_okay=False, path_type=Path).convert(name, param, ctx)
        return folder


STORE = StoreParam()


def store_option(fn: F) -> F:
    return click.option(
        "--store",
        type=STORE,
        default=None,
        metavar="DIR|s3://BUCKET/PREFIX",
        help="The store: a folder or an s3://BUCKET/PREFIX URL (default: $MIRROR_STORE, else "
        "$XDG_DATA_HOME/mirror, i.e. ~/.local/share/mirror).",
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


def files_option(
    flag: str, dest: str, metavar: str, help: str, kind: click.ParamType[Any, Any] | None = None
) -> Callable[[F], F]:
    """A repeatable option naming an existing file (or what `kind` takes)."""
    return click.option(
        flag,
        dest,
        multiple=True,
        metavar=metavar,
        type=kind or click.Path(exists=True, dir_okay=False, path_type=Path),
        help=help,
    )


def output_file_option(help: str, kind: click.ParamType[Any, Any] | None = None) -> Callable[[F], F]:
    """-o/--output FILE, the file a command writes (or what `kind` takes)."""
    return click.option(
        "-o", "--output", required=True, type=kind or click.Path(dir_okay=False, path_type=Path), help=help
    )


def policy_option(what: str) -> Callable[[F], F]:
    """--policy FILE (`policy_file`), the policy `what` is judged by (read it with `read_policy`)."""
    return click.option(
        "--policy",
        "policy_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="FILE",
        help=f"{what} by the policy in FILE: a YAML file with the manifest's `policy:` keys at its top level "
        "(default: the default policy: pickle warn, remote_code warn, hub_flagged deny, any licence and size).",
    )


def read_policy(policy_file: Path | None) -> Policy:
    """The policy `--policy FILE` names, or the default policy; a ManifestError (exit 2) naming the file, the
    line and the key when the file is not a valid policy."""
    from mirror.manifest import load_policy_file
    from mirror.validate.policy import DEFAULT_POLICY

    return load_policy_file(policy_file) if policy_file is not None else DEFAULT_POLICY


def threads_option(what: str) -> Callable[[F], F]:
    """--threads N: the worker threads of a bundle's zstd frames (`what` they do); -1, one per core."""
    return click.option(
        "--threads",
        default=-1,
        show_default=True,
        type=int,
        help=f"Worker threads that {what} (-1: one per core; at most 8, mirror.bundle.frames.MAX_WORKERS: "
        "each holds frames in memory, so memory stays bounded whatever N is).",
    )


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(fn)


def retry_options(fn: F) -> F:
    """--retries and --retry-time: how hard a command that asks the hubs retries one request."""
    fn = click.option(
        "--retry-time",
        default=900.0,
        show_default=True,
        metavar="SECONDS",
        type=click.FloatRange(0),
        help="Give up retrying one request after this long.",
    )(fn)
    return click.option(
        "--retries",
        default=5,
        show_default=True,
        type=click.IntRange(1, 100),
        help="Attempts per request on connection errors, cut-off bodies, 5xx and 429.",
    )(fn)


def layout_options(
    *, layout_help: str, target_help: str, layout_default: str | None = "hf"
) -> Callable[[F], F]:
    """--layout and --target: the tree of a layout the hub clients load (`resolve_target` gives a target
    not given its layout's default)."""

    def decorate(fn: F) -> F:
        fn = click.option("--target", type=STORE, default=None, metavar="DIR", help=target_help)(fn)
        return click.option(
            "--layout",
            type=click.Choice(LAYOUT_NAMES),
            default=layout_default,
            show_default=layout_default is not None,
            help=layout_help,
        )(fn)

    return decorate


def source_options(*, target_help: str) -> Callable[[F], F]:
    """BUNDLES, --store and --layout/--target: what `verify` and `scan` read (see `tree_layout`)."""

    def decorate(fn: F) -> F:
        fn = layout_options(
            layout_help="The layout of --target (default: hf).", target_help=target_help, layout_default=None
        )(fn)
        return click.argument("bundles", nargs=-1, type=BUNDLE)(store_option(fn))

    return decorate


def tree_layout(
    bundles: Sequence[Any], store: StoreName | None, target: StoreName | None, layout: str | None, verb: str
) -> str | None:
    """The layout of the imported tree --target/--layout name (`hf` by default), None when they name none;
    a usage error when BUNDLE or --store is given beside them."""
    if target is None and layout is None:
        return None
    if bundles or store is not None:
        raise click.UsageError(f"--target/--layout {verb} an imported tree: give no BUNDLE or --store")
    return layout or "hf"


def resolve_target(layout: str, target: StoreName | None) -> StoreName:
    """`--target`, else where the layout's hub client looks (from the environment); a usage error for a
    layout without a default, or an s3:// URL for a layout other than `store`."""
    found = target if target is not None else default_target(layout, os.environ)
    if found is None:
        raise click.UsageError(f"--layout {layout} needs --target DIR")
    if isinstance(found, str) and layout != "store":
        raise click.UsageError(
            f"--layout {layout} writes a folder: {found} is not one (only a store may be s3://)"
        )
    return found


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


def progress() -> ProgressSink:
    """The progress sink `output_options` chose for this run."""
    sink: ProgressSink = click.get_current_context().meta.get("progress", NullProgress())
    return sink


def settings(store: StoreName | None) -> Settings:
    return Settings.from_env(store, os.environ)


def open_store(name: StoreName) -> Store:
    """The store a `--store` (or `$MIRROR_STORE`, or a default) names, on the storage it designates."""
    from mirror.clock import SYSTEM
    from mirror.storage import open_storage
    from mirror.store import Store

    return Store(open_storage(name, clock=SYSTEM), clock=SYSTEM)
