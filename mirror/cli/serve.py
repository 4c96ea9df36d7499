"""`mirror serve`: serve a store to a fleet, as a read-only Hugging Face and ModelScope hub."""

from __future__ import annotations

from pathlib import Path

import click

from mirror.cli.exits import EXIT_CODES_HELP
from mirror.cli.options import settings, store_option


@click.command(epilog=EXIT_CODES_HELP)
@store_option
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8088, show_default=True, type=click.IntRange(0, 65535), help="The port.")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes sharing the port.",
)
def serve(store: Path | None, host: str, port: int, workers: int) -> None:
    """Serve the store, read-only, as a Hugging Face and ModelScope hub, until SIGTERM or Ctrl-C."""
    from mirror.clock import SYSTEM
    from mirror.serve.server import ServeConfig
    from mirror.serve.server import serve as run

    run(ServeConfig(settings(store).store, host, port, workers), SYSTEM)
