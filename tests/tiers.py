"""The two test tiers: the fast unit tier and the end-to-end tier (`e2e`), as pytest hooks.

`pytest -m "not e2e"` (`make test-fast`) runs the fast tier: in-process tests, no subprocess, no torch; the
project's own loopback hub runs in-process (a thread on 127.0.0.1), so the transfer and sync tests are here.
A test is end-to-end when it is marked `@pytest.mark.e2e` (or its module sets `pytestmark`), or when it uses one of E2E_FIXTURES (they run the installed `mirror` or a client in a subprocess). A test of
the fast tier that starts a process, or a server off loopback, or imports torch or transformers, fails and
says to mark it.
tests/conftest.py imports these hooks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

E2E = "e2e"
# Fixtures that start a subprocess or torch: every test using one is end-to-end.
E2E_FIXTURES = frozenset(
    {
        "twins",  # tests/test_fidelity.py: huggingface_hub's own download from the hub
        "minilm",  # tests/test_roundtrip.py: the real model synced by the installed `mirror`
        "original_embeddings",  # tests/test_roundtrip.py: transformers in a subprocess
        "moved",  # tests/test_delta.py: the hub and the installed `mirror`
        "volumes",  # tests/test_volumes.py: a set exported by the installed `mirror`
    }
)
# What the fast tier never imports (modelscope imports torch).
HEAVY_MODULES = ("torch", "transformers", "sentence_transformers", "modelscope")


def is_e2e(item: pytest.Item) -> bool:
    return item.get_closest_marker(E2E) is not None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(E2E)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    before = set(sys.modules)
    collected = yield
    loaded = [name for name in heavy_modules() if name not in before]
    if loaded:
        raise pytest.UsageError(
            f"collecting the tests imported {', '.join(loaded)}: import it inside the end-to-end test that "
            "needs it, so the fast tier never pays for it"
        )
    return collected


def heavy_modules() -> list[str]:
    return [name for name in HEAVY_MODULES if name in sys.modules]


def refusal(item: pytest.Item, what: str) -> Callable[..., NoReturn]:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        pytest.fail(
            f"{item.nodeid} {what} but is not marked end-to-end: mark it @pytest.mark.{E2E} "
            f"(or use an in-process fake)",
            pytrace=True,
        )

    return refuse


def loopback_only(item: pytest.Item, listen: Callable[..., None]) -> Callable[..., None]:
    """`socket.listen` for a fast test: the project's in-process servers on 127.0.0.1 (the loopback hub) may
    listen; a server on any other address is refused."""

    def guarded(sock: socket.socket, *args: object) -> None:
        host = sock.getsockname()[0] if sock.family in (socket.AF_INET, socket.AF_INET6) else None
        if host not in ("127.0.0.1", "::1"):
            refusal(item, f"starts a server on {host}")()
        listen(sock, *args)

    return guarded


@contextmanager
def fast_only(item: pytest.Item) -> Iterator[None]:
    """In a test of the fast tier: starting a process or a server off loopback fails the test, and so does importing
    one of HEAVY_MODULES (seen only when no end-to-end test imported it before, in-process)."""
    if is_e2e(item):
        yield
        return
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess.Popen, "_execute_child", refusal(item, "starts a subprocess"))
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system"):
            patch.setattr(os, name, refusal(item, f"calls os.{name}"))
        patch.setattr(socket.socket, "listen", loopback_only(item, socket.socket.listen))
        yield
    imported = [name for name in heavy_modules() if name not in before]
    if imported:
        pytest.fail(f"{item.nodeid} imports {', '.join(imported)} but is not marked end-to-end")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with fast_only(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with fast_only(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with fast_only(item):
        return (yield)
