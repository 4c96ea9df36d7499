"""Runs the application of `mirror serve` on granian: `workers` processes sharing the port, each building
the application from the same configuration, until SIGTERM or SIGINT.

On SIGTERM or SIGINT, granian stops accepting connections and the workers finish the answers in flight;
an answer still going after `grace` seconds (a stalled client) is cut by stopping its worker, so a client
sees either the whole body or fewer bytes than its Content-Length, never a wrong byte. Then `serve`
returns. The workers are forked from this process, so the configuration, the tokens and the open access
log reach them without being written anywhere.
"""

from __future__ import annotations

import copy
import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from granian import Granian
from granian.constants import Interfaces
from granian.log import LOGGING_CONFIG
from starlette.types import ASGIApp

from mirror.clock import Clock
from mirror.errors import MirrorError, UsageError
from mirror.serve.app import create_app
from mirror.serve.audit import AccessLog
from mirror.serve.tokens import Tokens
from mirror.settings import StoreName
from mirror.storage import open_storage
from mirror.validate.policy import DEFAULT_POLICY, Policy


@dataclass(frozen=True)
class ServeConfig:
    """What `mirror serve` serves, where, and how."""

    store: StoreName  # a folder, or an s3:// URL: each worker opens its storage
    host: str = "127.0.0.1"
    port: int = 8088
    workers: int = 1
    tokens: Tokens | None = None
    access_log: Path | None = None
    grace: int = 30  # seconds the answers in flight get to finish on SIGTERM/SIGINT
    redirect: bool = False  # an LFS file of a store in a bucket: a 302 to a presigned URL of its blob
    policy: Policy = DEFAULT_POLICY  # what is refused (403)


def build_app(config: ServeConfig, clock: Clock, access_log: AccessLog | None) -> ASGIApp:
    """The application of one worker (called in the worker process)."""
    return create_app(
        config.store,
        clock=clock,
        tokens=config.tokens,
        access_log=access_log,
        redirect=config.redirect,
        policy=config.policy,
    )


def check_store(store: StoreName, clock: Clock, *, redirect: bool = False) -> None:
    """A UsageError for a store that cannot be served, or a redirect asked of a store that is not in a bucket
    (a folder's files have no URL to send a client to)."""
    storage = open_storage(store, clock=clock)
    if redirect and storage.local_root is not None:
        raise UsageError(
            f"--redirect needs a store in a bucket (an s3://BUCKET/PREFIX URL): {store} is a folder, "
            "whose files the server sends itself (leave --redirect out)"
        )
    problem = storage.problem()
    if problem is not None:
        raise UsageError(
            f"cannot serve the store {store}: {problem} (serve a store `mirror sync` or "
            "`mirror import --layout store` wrote, or an empty folder)"
        )


def check_port(host: str, port: int) -> None:
    """Fail early, naming host:port, when the address cannot be bound (in use, or not an address here)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            raise MirrorError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _stderr_logging() -> dict[str, Any]:
    """granian's logging, on stderr (stdout is for results)."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        handler["stream"] = "ext://sys.stderr"
    return config


def serve(config: ServeConfig, clock: Clock) -> None:
    """Serve until SIGTERM or SIGINT; returns once every worker has stopped. A UsageError (exit 2) for a
    folder that is not a store, `redirect` over a folder, or an access log that cannot be opened; a
    MirrorError (exit 1) when the address cannot be bound."""
    check_store(config.store, clock, redirect=config.redirect)
    check_port(config.host, config.port)
    access_log = AccessLog(config.access_log) if config.access_log is not None else None
    server = Granian(
        "mirror.serve.app:create_app",  # only named in granian's logs: the loader below builds the app
        address=config.host,
        port=config.port,
        interface=Interfaces.ASGI,
        workers=config.workers,
        factory=True,
        log_access=False,
        log_dictconfig=_stderr_logging(),
        workers_kill_timeout=config.grace,
    )
    try:
        # forked workers: the loader and what it holds reach them without pickling
        server.serve(target_loader=partial(build_app, config, clock, access_log), wrap_loader=False)
    finally:
        if access_log is not None:
            access_log.close()
