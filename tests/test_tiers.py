"""The tiers of tests/tiers.py, run on small test files by pytest's own pytester (in this process): a
fast test that starts a process or a server off loopback, or imports a heavy module, fails and says to mark it; a
test using an end-to-end fixture is marked without being told; `-m "not e2e"` leaves the rest."""

from __future__ import annotations

import sys

import pytest

from tests import tiers

pytest_plugins = ("pytester",)

CONFTEST = """
import pytest

pytest_plugins = ["tests.tiers"]

@pytest.fixture
def minilm():
    yield "the installed mirror would run here"
"""

TESTS = """
import os, socket, subprocess, sys
import pytest

UNPATCHED = subprocess.Popen._execute_child  # at collection: this session patches nothing then

def test_fast():
    assert 1 + 1 == 2

def test_runs_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_forks():
    os.fork()

def test_listens():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()

def test_listens_on_loopback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()

@pytest.mark.e2e
def test_marked_may_run_a_process():
    assert subprocess.Popen._execute_child is UNPATCHED

def test_uses_an_end_to_end_fixture(minilm):
    assert subprocess.Popen._execute_child is UNPATCHED
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n    e2e: end-to-end\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=TESTS)
    return pytester


def test_a_fast_test_that_starts_a_process_or_a_server_fails_and_says_to_mark_it(
    suite: pytest.Pytester,
) -> None:
    result = suite.runpytest("-m", "not e2e", "-v")
    result.assert_outcomes(passed=2, failed=3, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*test_runs_a_process starts a subprocess but is not marked end-to-end: mark it @pytest.mark.e2e*",
            "*test_forks calls os.fork but is not marked end-to-end*",
            "*test_listens starts a server on 0.0.0.0 but is not marked end-to-end*",
        ]
    )


def test_marked_tests_and_tests_using_an_end_to_end_fixture_run_in_the_e2e_tier(
    suite: pytest.Pytester,
) -> None:
    result = suite.runpytest("-m", "e2e", "-v")
    result.assert_outcomes(passed=2, deselected=5)
    result.stdout.fnmatch_lines_random(
        ["*::test_marked_may_run_a_process PASSED*", "*::test_uses_an_end_to_end_fixture PASSED*"]
    )


@pytest.mark.parametrize("at_collection", [False, True], ids=["in-a-test", "at-collection"])
def test_importing_a_heavy_module_fails_the_fast_tier(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, at_collection: bool
) -> None:
    heavy = "tiers_heavy_stand_in"  # stands for torch: the real one would stay imported in this process
    monkeypatch.setattr(tiers, "HEAVY_MODULES", (heavy,))
    pytester.makeconftest(CONFTEST)
    test_file = (
        f"import {heavy}\n\ndef test_imports():\n    pass\n"
        if at_collection
        else f"def test_imports():\n    import {heavy}\n"
    )
    pytester.makepyfile(**{heavy: "", "test_heavy": test_file})
    pytester.syspathinsert()
    try:
        result = pytester.runpytest()
    finally:
        sys.modules.pop(heavy, None)  # or this test, fast itself, would be failed for it
    if at_collection:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*collecting the tests imported {heavy}: import it inside*"])
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([f"*test_imports imports {heavy} but is not marked end-to-end*"])
