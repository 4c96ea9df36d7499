"""Exit codes by name, and the one rule that combines several outcomes (a sync's revisions, an import's
bundles) into the exit code of the run."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """What the exit code of a run says (README "Exit codes"); `--json` names a failure by its lower-case
    name (`usage`, `integrity`, ...)."""

    OK = 0
    FAILURE = 1  # a hub unreachable, a repo or revision not found, ...
    USAGE = 2  # bad usage or an invalid manifest
    PARTIAL = 3  # some items failed, the rest were done
    INTEGRITY = 4  # a hash or size mismatch, a corrupt or hostile bundle
    LOCKED = 75  # another run holds the lock (EX_TEMPFAIL)
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM


def combine(codes: Iterable[ExitCode]) -> ExitCode:
    """The exit code of a run of several items (OK for each that succeeded): the worst wins.

    Interrupted first, then integrity (a stopped run or damage is never reported as partial, even beside
    items that succeeded); otherwise outcomes all alike keep their code; something done (OK, or itself
    partial) beside a failure is PARTIAL; failures of different kinds with nothing done are FAILURE. No
    item at all is OK. Only which codes occur counts: the order does not, and combining parts first and
    then their results gives the same code as combining the whole.
    """
    seen = set(codes)
    if seen <= {ExitCode.OK}:
        return ExitCode.OK
    for worst in (ExitCode.INTERRUPTED, ExitCode.INTEGRITY):
        if worst in seen:
            return worst
    if len(seen) == 1:
        return ExitCode(seen.pop())
    if seen & {ExitCode.OK, ExitCode.PARTIAL}:
        return ExitCode.PARTIAL
    return ExitCode.FAILURE
