"""`make bench` cannot rot: its quick mode (a few MB, one run each) fills every row of the table.

No timing is asserted: benchmarks are not timed tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness import main

pytestmark = pytest.mark.e2e  # the quick `make bench`: the installed `mirror` and its peers, in subprocesses

ROWS = ["1", "2", "3", "3b", "3c", "4", "4b", "5", "6a", "6b"]


def test_quick_bench_fills_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "bench-work"
    assert main(["--quick", "--workdir", str(work)]) == 0
    results = json.loads((work / "results.json").read_text())
    rows = {row["id"]: row for row in results["rows"]}
    assert list(rows) == ROWS
    for row in rows.values():
        assert row["error"] is None, row
        assert row["runs"] and row["mirror"] and row["peer"] and row["ratio"], row
        assert row["met"] in (True, False), row
    assert all(s > 0 for s in rows["1"]["data"]["mirror_seconds"] + rows["1"]["data"]["peer_seconds"])
    assert all(r > 0 for r in rows["6a"]["data"]["peak_rss_big"] + rows["6b"]["data"]["peak_rss_big"])
    printed = capsys.readouterr().out
    for row_id in ROWS:
        assert f"\n| {row_id} | " in printed
    assert (work / "results.md").read_text().strip() == printed.strip()
