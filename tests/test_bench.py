"""`make bench` cannot rot: its quick mode (a few MB, one run each) fills every row of the table; and its
pure parts (percentiles, curl's output, the nginx config, `--only`) do what they say.

No timing is asserted: benchmarks are not timed tests.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import servers
from bench.data import QUICK, TORCH_MISSING, Model, ensure_checkpoints, layer_tensors, write_safetensors
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
    "6c",
    "6d",
    "7",
    "8",
    "9",
    "9b",
    "9c",
    "10a",
    "10b",
    "10c",
    "11",
    "12a",
    "12b",
    "12c",
    "13",
    "13b",
    "13c",
    "13d",
    "13e",
    "14a",
    "14b",
    "14c",
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
    assert selected("scan-overhead") == {"12"} and selected("threads") == {"14"}
    with pytest.raises(ValueError, match="no figure 15"):
        selected("1,15")


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
    assert rows["6c"]["data"]["threads"] == rows["6d"]["data"]["threads"] == 16
    for row_id in ("14a", "14b", "14c"):  # every run told its threads' CPU; the busiest one is named
        busiest = rows[row_id]["data"]
        assert all(0 < share <= 1 for share in busiest["busiest_share"]), busiest
        assert all(name in rows[row_id]["mirror"] for name in busiest["busiest_thread"])
        for stats in busiest["threads"]:
            assert stats["total"] > 0 and stats["threads"][0]["name"] in busiest["busiest_thread"]
    for row_id in ("12a", "12b", "12c"):  # the scan timed alone judged the same files: nothing to find
        scan = rows[row_id]["data"]
        assert scan["findings"] == [] and all(s > 0 for s in scan["scan_seconds"] + scan["sync_seconds"])
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


@pytest.mark.e2e  # imports torch (heavy)
def test_the_checkpoints_hold_the_safetensors_weights_in_both_torch_formats(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    source = Model("bench/two", tmp_path / "two")
    source.folder.mkdir()
    for k in (1, 2):  # two shards of a layer stack and a config, as the bench's 2 GB model at a small scale
        shard = source.folder / f"model-{k:05d}-of-00002.safetensors"
        write_safetensors(shard, layer_tensors(QUICK, QUICK.shard_bytes, 10 * k))
    (source.folder / "config.json").write_bytes(b'{"model_type": "llama"}')
    made = ensure_checkpoints(source, tmp_path / "checkpoints", lambda _: None)
    expected: dict[str, object] = {}
    for shard in sorted(source.folder.glob("*.safetensors")):
        expected |= load_file(shard)
    zipped, legacy = made.zip.folder / "pytorch_model.bin", made.legacy.folder / "pytorch_model.bin"
    assert zipped.read_bytes()[:4] == b"PK\x03\x04"  # torch.save's zip format
    assert legacy.read_bytes()[:2] == b"\x80\x02"  # pickles back to back, then the storages
    for path in (zipped, legacy):
        loaded = torch.load(path, weights_only=True)
        assert list(loaded) == list(expected)
        assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    assert (made.zip.folder / "config.json").read_bytes() == (source.folder / "config.json").read_bytes()
    assert not any(p.suffix == ".safetensors" for p in made.zip.files())
    written = {path: path.stat().st_mtime_ns for path in (zipped, legacy)}
    again = ensure_checkpoints(source, tmp_path / "checkpoints", lambda _: None)
    assert again == made
    assert {path: path.stat().st_mtime_ns for path in (zipped, legacy)} == written  # not written again


@pytest.mark.e2e  # `mirror sync` in subprocesses
def test_without_torch_the_scan_figure_measures_safetensors_and_says_why_not_the_pickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    work = tmp_path / "bench-work"
    assert main(["--quick", "--only", "scan-overhead", "--workdir", str(work)]) == 0
    rows = {row["id"]: row for row in json.loads((work / "results.json").read_text())["rows"]}
    assert list(rows) == ["12a", "12b", "12c"]
    assert rows["12a"]["met"] in (True, False) and rows["12a"]["mirror"].startswith("scan ")
    for row_id in ("12b", "12c"):
        assert rows[row_id]["error"] is None and rows[row_id]["met"] is None
        assert rows[row_id]["peer"] == TORCH_MISSING
    assert not (work / "checkpoints-quick").exists()
