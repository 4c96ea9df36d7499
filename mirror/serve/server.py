"""Runs the application of `mirror serve` on granian: `workers` processes sharing the port, each building
the application from the same configuration, until SIGTERM or SIGINT."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from granian import Granian
from granian.constants import Interfaces
from starlette.types import ASGIApp

from mirror.clock import Clock
from mirror.errors import MirrorError
from mirror.serve.app import create_app


@dataclass(frozen=True)
class ServeConfig:
    """What every worker builds its application from."""

    store: Path
    host: str = "127.0.0.1"
    port: int = 8088
    workers: int = 1


def build_app(config: ServeConfig, clock: Clock) -> ASGIApp:
    """The application of one worker (called in the worker process)."""
    return create_app(config.store, clock=clock)


def check_port(host: str, port: int) -> None:
    """Fail early, naming host:port, when the address cannot be bound (in use, or not an address here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise MirrorError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(config: ServeConfig, clock: Clock) -> None:
    """Serve until SIGTERM or SIGINT; returns once every worker has stopped."""
    check_port(config.host, config.port)
    server = Granian(
        "mirror.serve.app:create_app",  # only named in granian's logs: the loader below builds the app
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        factory=True,
        log_access=False,
    )
    # The workers are forked: the loader (and the configuration it holds) reaches them without pickling.
    server.serve(target_loader=partial(build_app, config, clock), wrap_loader=False)
