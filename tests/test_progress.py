"""The progress gate: a bar only for a person at a terminal, never under cron, -q or --no-progress."""

from __future__ import annotations

import io

import pytest

from mirror.progress import wants_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "quiet", "no_progress", "env", "shown"),
    [
        (Terminal(), False, False, {"TERM": "xterm"}, True),
        (Terminal(), False, False, {}, True),
        (io.StringIO(), False, False, {"TERM": "xterm"}, False),  # no terminal: cron, a pipe, a file
        (Terminal(), True, False, {}, False),  # -q
        (Terminal(), False, True, {}, False),  # --no-progress
        (Terminal(), False, False, {"TERM": "dumb"}, False),
        (Terminal(), False, False, {"MIRROR_NO_PROGRESS": "1"}, False),
        (Terminal(), False, False, {"MIRROR_NO_PROGRESS": ""}, True),  # set but empty: not asked
        (object(), False, False, {}, False),  # a stream that cannot say
    ],
    ids=[
        "terminal",
        "no-TERM",
        "no-tty",
        "quiet",
        "no-progress",
        "dumb",
        "env-off",
        "env-empty",
        "no-isatty",
    ],
)
def test_a_bar_only_for_a_person_at_a_terminal(
    stream: object, quiet: bool, no_progress: bool, env: dict[str, str], shown: bool
) -> None:
    assert wants_bar(stream, quiet=quiet, no_progress=no_progress, env=env) is shown  # type: ignore[arg-type]
