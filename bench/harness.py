"""`make bench`: generate the data once, serve it from the loopback hub, run every figure, print the table.

`python -m bench [--workdir DIR] [--quick] [--runs N] [--only 1,3,...]`. Writes DIR/results.md and
DIR/results.json besides printing the table; exits 1 if a figure could not be measured (a command
failed), never because a target was missed.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bench.data import FULL, QUICK, ensure_data
from bench.figures import Bench, Row, start_hub
from bench.measure import BenchError
from bench.objects import ObjectBench
from bench.report import machine, markdown
from bench.scans import ScanBench
from bench.serving import ServeBench
from tests.roundtrip import PROJECT

ROWS = {
    "1": ["1"],
    "2": ["2"],
    "3": ["3", "3b", "3c"],
    "4": ["4", "4b"],
    "5": ["5"],
    "6": ["6a", "6b", "6c", "6d"],
    "7": ["7"],
    "8": ["8"],
    "9": ["9", "9b", "9c"],
    "10": ["10a", "10b", "10c"],
    "11": ["11"],
    "12": ["12a", "12b", "12c"],
    "13": ["13", "13b", "13c", "13d", "13e"],
    "14": ["14a", "14b", "14c"],
}
NAMES = {
    "serve-big": "7",
    "serve-many": "8",
    "serve-meta": "9",
    "s3-store": "10",
    "serve-redirect": "11",
    "scan-overhead": "12",
    "codec": "13",
    "threads": "14",
}  # --only takes these names too


def selected(only: str) -> set[str]:
    """The figures `--only` names (numbers, or the serve figures' names); ValueError names the unknown."""
    chosen = {NAMES.get(f.strip(), f.strip()) for f in only.split(",") if f.strip()}
    if chosen - set(ROWS):
        known = ", ".join([*ROWS, *NAMES])
        raise ValueError(f"--only: no figure {', '.join(sorted(chosen - set(ROWS)))} (figures: {known})")
    return chosen


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", type=Path, default=PROJECT / "bench-work", help="data and runs (default: bench-work/)"
    )
    parser.add_argument("--quick", action="store_true", help="small data, one run each: a smoke run")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure and side (default: 3; quick: 1)"
    )
    parser.add_argument(
        "--only",
        default=",".join(ROWS),
        help="figures to run, e.g. 1,4,5 (5 needs 4) or serve-big,serve-meta,s3-store,serve-redirect,scan-overhead",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    scale = QUICK if args.quick else FULL
    if args.runs is not None:
        scale = replace(scale, runs=max(1, args.runs))
    try:
        only = selected(args.only)
    except ValueError as e:
        parser.error(str(e))
    work: Path = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    # mirror's modules compiled as an installed package has them (pip compiles at install; an editable
    # install under PYTHONDONTWRITEBYTECODE would compile them again in every run it measures).
    compileall.compile_dir(PROJECT / "mirror", quiet=1)
    t = time.perf_counter()
    data = ensure_data(scale, work / f"data-{scale.name}", _say)
    _say(f"bench: data ready in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    hub = start_hub(data)
    _say(f"bench: loopback hub at {hub.url} ready in {time.perf_counter() - t:.1f} s (it hashes every file)")
    rows: list[Row] = []
    serve: ServeBench | None = None
    objects: ObjectBench | None = None
    # SIGTERM ends the bench as Ctrl-C does: through the `finally` below, which stops the servers it started.
    on_term = signal.signal(signal.SIGTERM, _terminated)
    try:
        bench = Bench(scale, work, data, hub, _say)
        serve = ServeBench(bench)
        objects = ObjectBench(bench)
        steps: list[tuple[str, str, Callable[[], Row | list[Row]]]] = [
            ("1", "sync of the 2 GB model", bench.sync_two_gb),
            ("2", "sync of the 1 GB file, rate-limited hub", bench.sync_rate_limited),
            ("3", "no-op re-sync of many small repos", bench.noop_resync),
            ("4", "export of the 2 GB model", bench.export_two_gb),
            ("5", "import of that bundle", bench.import_two_gb),
            ("6", "peak RSS of export and import, 1 GB vs 4 GB, default and 16 threads", bench.memory),
            ("7", "serve-big: mirror serve vs nginx, one large file", serve.serve_big),
            ("8", "serve-many: mirror serve vs nginx, one file per client", serve.serve_many),
            ("9", "serve-meta: cached snapshot_downloads, mirror vs loopback hub", serve.serve_meta),
            (
                "10",
                "s3-store: sync, export, import with the store in the S3 server vs on disk",
                objects.store_figures,
            ),
            ("11", "serve-redirect: serve over the S3 server, --redirect vs streaming", objects.redirect),
            ("12", "scan-overhead: what the scan adds to a sync", ScanBench(bench).scan_overhead),
            (
                "13",
                "codec: export --codec bytegroup vs plain, bf16 and a real bf16/fp16 checkpoint",
                bench.codec,
            ),
            (
                "14",
                "threads: the busiest thread's share of the CPU, sync, export, import",
                bench.busiest_thread,
            ),
        ]
        for key, title, step in steps:
            if key not in only:
                continue
            _say(f"bench: figure {key}, {title}")
            t = time.perf_counter()
            try:
                made = step()
                rows.extend(made if isinstance(made, list) else [made])
            except BenchError as e:
                _say(f"bench: figure {key} failed: {e}")
                rows.extend(Row(row_id, title, "", error=str(e)) for row_id in ROWS[key])
            _say(f"bench: figure {key} took {time.perf_counter() - t:.1f} s")
    finally:
        if serve is not None:
            serve.cleanup()
        if objects is not None:
            objects.cleanup()
        hub.stop()
        signal.signal(signal.SIGTERM, on_term)

    wall = time.perf_counter() - start
    given = list(sys.argv[1:] if argv is None else argv)
    command = "python -m bench " + " ".join(given) if given else "make bench"
    info = machine()
    info["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    text = markdown(rows, info, wall, command)
    if scale.runs != FULL.runs or scale.name != FULL.name:
        text += f"\nScale: {scale.name}, {scale.runs} run(s) per side."
    print(text, flush=True)
    (work / "results.md").write_text(text + "\n")
    results = {
        "scale": scale.name,
        "runs": scale.runs,
        "wall_seconds": wall,
        "machine": info,
        "rows": [r.to_json() for r in rows],
    }
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r.error for r in rows) else 0
