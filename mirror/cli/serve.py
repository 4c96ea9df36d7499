"""`mirror serve`: serve a store to a fleet, as a read-only Hugging Face and ModelScope hub."""

from __future__ import annotations

from pathlib import Path

import click

from mirror.cli.options import policy_option, read_policy, settings, store_option
from mirror.settings import StoreName

SERVE_EXIT_CODES = (
    "Exit codes: 0 stopped by SIGTERM or Ctrl-C (a server has nothing to cut short), 1 failure (the address "
    "in use, a worker failed), 2 bad usage (not a store, a bad --token-file, an access log that cannot be "
    "opened, --redirect over a folder, a bad --policy file)."
)


@click.command(epilog=SERVE_EXIT_CODES)
@store_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (0.0.0.0: every IPv4 address of the machine).",
)
@click.option("--port", default=8088, show_default=True, type=click.IntRange(1, 65535), help="The port.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes sharing the port. Files are sent by granian's Rust side whatever their number; "
    "more workers answer more metadata requests at once.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Require a token: the FILE holds lines NAME:TOKEN (blank lines and # comments allowed). Each "
    "request must send `Authorization: Bearer TOKEN` (what clients send from HF_TOKEN) or the cookie "
    "m_session_id=TOKEN (ModelScope's); else 401. The access log names the token's NAME, never the token.",
)
@click.option(
    "--access-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON line per request to FILE: time, client, token (its NAME), method, target, repo, "
    "revision, path, status, bytes, duration (seconds).",
)
@click.option(
    "--grace",
    default=30,
    show_default=True,
    metavar="SECONDS",
    type=click.IntRange(1, 3600),
    help="On SIGTERM or Ctrl-C, downloads in flight get SECONDS to finish before they are cut.",
)
@click.option(
    "--redirect",
    is_flag=True,
    help="Over a store in a bucket (--store s3://...): answer the download of an LFS file with a 302 to a "
    "presigned URL of its blob, valid 5 minutes, so its bytes flow from the object store; clients must reach "
    "the endpoint the server's AWS configuration names. Git files are still sent by the server. Without it, "
    "every file is streamed through the server.",
)
@policy_option(
    "Refuse to serve what the policy denies: a file with a denied finding, every file of a revision whose "
    "licence or size it denies, answered 403 with the file, finding and rule (no redirect). Judge each "
    "revision's scan recorded in the store (by sync, import), else the server's own scan of its blobs, "
    "made once per revision. Listings still show every file. Judge"
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A failure to start as a JSON error object on stdout, as every command's (the server's own log "
    "goes to stderr).",
)
def serve(
    store: StoreName | None,
    host: str,
    port: int,
    workers: int,
    token_file: Path | None,
    access_log: Path | None,
    grace: int,
    redirect: bool,
    policy_file: Path | None,
    as_json: bool,
) -> None:
    """Serve the store, read-only, as a Hugging Face Hub and a ModelScope hub on one origin.

    \b
    Clients point at it with no code change:
      HF_ENDPOINT=http://HOST:PORT  MODELSCOPE_ENDPOINT=http://HOST:PORT

    GET / is a catalogue of what the store holds (200 once the server is ready), with what the policy
    refuses and why. A bundle imported into the store while it serves shows at the next request. SIGTERM or
    Ctrl-C stops the server gracefully.
    """
    from mirror.clock import SYSTEM
    from mirror.serve.server import ServeConfig
    from mirror.serve.server import serve as run
    from mirror.serve.tokens import read_tokens

    policy = read_policy(policy_file)  # checked before the port is bound: a bad file is exit 2
    tokens = read_tokens(token_file) if token_file is not None else None
    config = ServeConfig(
        settings(store).store, host, port, workers, tokens, access_log, grace, redirect, policy
    )
    run(config, SYSTEM)
