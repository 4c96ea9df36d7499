"""`make bench` cannot rot: its quick mode (a few MB, one run each) fills every row of the table; and its
pure parts (percentiles, curl's output, the nginx config, `--only`) do what they say.

No timing is asserted: benchmarks are not timed tests.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from bench import servers
from bench.harness import main, selected
from bench.measure import BenchError
from bench.servers import NGINX_MISSING, nginx, nginx_config, sample_tree
from bench.serving import curl_command, parse_curl, percentile

ROWS = [
    "1",
    "2",
    "3",
    "3b",
    "3c",
    "4",
    "4b",
    "5",
    "6a",
    "6b",
    "7",
    "8",
    "9",
    "9b",
    "9c",
    "10a",
    "10b",
    "10c",
    "11",
    "13",
    "13b",
    "13c",
    "13d",
    "13e",
]
# ratios without a target: the S3 server against a local disk; the codec on a real checkpoint
REPORTED = {"10a", "10b", "10c", "13d", "13e"}


def test_percentile_interpolates_between_ranks_as_numpy_does() -> None:
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0], 0) == 1.0
    assert percentile([1.0, 2.0, 3.0], 100) == 3.0
    rnd = random.Random(7)
    values = [rnd.expovariate(1.0) for _ in range(1001)]
    for q in (1, 50, 90, 99, 99.9):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_a_curl_client_fetches_its_url_repeatedly_and_its_lines_parse_back() -> None:
    cmd = curl_command("http://127.0.0.1:9/a/resolve/main/f.bin", 3)
    assert cmd[0] == "curl" and cmd.count("http://127.0.0.1:9/a/resolve/main/f.bin") == 3
    assert cmd.count("/dev/null") == 3  # every body thrown away
    out = "200 1000000000\n200 1000000000\n\n206 10\n"
    assert parse_curl(out) == [(200, 1_000_000_000), (200, 1_000_000_000), (206, 10)]
    assert parse_curl("") == []


def test_the_nginx_config_serves_the_root_with_sendfile_and_keeps_its_files_in_its_prefix(
    tmp_path: Path,
) -> None:
    prefix, root = tmp_path / "nginx", tmp_path / "static"
    conf = nginx_config(prefix, root, 18123, 2, euid=1000)
    lines = [line.strip() for line in conf.splitlines()]
    assert "sendfile on;" in lines and "daemon off;" in lines and "worker_processes 2;" in lines
    assert "listen 127.0.0.1:18123;" in lines and f"root {root};" in lines
    assert f"pid {prefix / 'nginx.pid'};" in lines and "access_log off;" in lines
    assert any(line.startswith(f"error_log {prefix}/") for line in lines)
    temps = [line for line in lines if "_temp_path" in line]
    assert len(temps) == 5 and all(f" {prefix}/temp/" in line for line in temps)
    assert not any(line.startswith("user ") for line in lines)  # not root: nginx keeps its user
    as_root = nginx_config(prefix, root, 18123, 2, euid=0).splitlines()
    assert as_root[0].startswith("user root ")  # root: workers as the bench's user, not nobody
    assert conf.count("{") == conf.count("}")


def test_without_nginx_the_peer_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "NGINX", tmp_path / "no-nginx")
    started = nginx(tmp_path, 1, "/", temp=tmp_path, env={}, log=tmp_path / "log")
    with pytest.raises(BenchError, match=r"^nginx not installed \(make system-deps\)$") as caught:
        started.__enter__()
    assert str(caught.value) == NGINX_MISSING
    assert not (tmp_path / "nginx").exists()  # nothing started, nothing left


def test_only_takes_numbers_and_the_serve_figures_names() -> None:
    assert selected("1, 4,5") == {"1", "4", "5"}
    assert selected("serve-big,serve-meta,8") == {"7", "9", "8"}
    assert selected("s3-store,serve-redirect,codec") == {"10", "11", "13"}
    with pytest.raises(ValueError, match="no figure 12"):
        selected("1,12")


def test_a_process_tree_sample_counts_this_process() -> None:
    sample = sample_tree(os.getpid())
    assert sample.processes >= 1 and sample.rss >= sample.largest > 0 and sample.cpu > 0


@pytest.mark.e2e  # the quick `make bench`: the installed `mirror` and its peers, in subprocesses
def test_quick_bench_fills_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "bench-work"
    assert main(["--quick", "--workdir", str(work)]) == 0
    results = json.loads((work / "results.json").read_text())
    rows = {row["id"]: row for row in results["rows"]}
    assert list(rows) == ROWS
    for row in rows.values():
        assert row["error"] is None, row
        assert row["runs"] and row["mirror"] and row["peer"] and row["ratio"], row
        assert row["met"] in ((None,) if row["id"] in REPORTED else (True, False)), row
    assert all(s > 0 for s in rows["1"]["data"]["mirror_seconds"] + rows["1"]["data"]["peer_seconds"])
    assert all(r > 0 for r in rows["6a"]["data"]["peak_rss_big"] + rows["6b"]["data"]["peak_rss_big"])
    printed = capsys.readouterr().out
    for row_id in ROWS:
        assert f"\n| {row_id} | " in printed
    assert (work / "results.md").read_text().strip() == printed.strip()


@pytest.mark.e2e  # `mirror serve` in a subprocess
def test_without_nginx_the_serve_figure_shows_mirror_alone_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servers, "NGINX", tmp_path / "no-nginx")
    work = tmp_path / "bench-work"
    assert main(["--quick", "--only", "serve-big", "--workdir", str(work)]) == 0
    (row,) = json.loads((work / "results.json").read_text())["rows"]
    assert row["id"] == "7" and row["error"] is None and row["met"] is None
    assert row["peer"] == NGINX_MISSING and row["mirror"].endswith(" GB/s")
    assert not (work / "runs" / "serve").exists()  # the served store is removed at the end
