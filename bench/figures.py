"""The figures of `make bench`: each runs the installed `mirror` and its peer side by side, as child
processes against the loopback hub in this process, and becomes one or two rows of the table.

Runs alternate mirror / peer and every run gets a fresh target (store, cache, import folder). Every run
is warm-cache (dropping the page cache needs root): right before each run its inputs are read once, as
this machine pages out file data left idle for about a minute, and `os.sync()` flushes the previous
run's writes so their writeback does not land in this run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.data import Dataset, Model, Scale
from bench.measure import BenchError, Run, run
from mirror.clock import SYSTEM
from mirror.store import Store
from tests.hub import Fault, HubFile, LoopbackHub
from tests.roundtrip import PROJECT, fresh_env, mirror_command

RATE_LIMIT = 25e6  # bytes/s per connection in figure 2, as a CDN or a long link caps one connection
LATENCY = 0.02  # seconds added to each API request in figure 3c: a hub a few network hops away
MB = 1e6
THREADS = 16  # figures 6c, 6d: export and import with this many workers, more than this machine's cores
SHARE = 1 / 8  # figure 14: the busiest thread's CPU / the process's, so that the work spreads over 8 cores


@dataclass
class Row:
    """One line of the table. Text cells are what is printed; `data` keeps the raw samples for JSON."""

    id: str
    figure: str
    target: str
    runs: str = ""
    mirror: str = ""
    peer: str = ""
    ratio: str = ""
    met: bool | None = None
    cpu: str = ""  # CPU seconds, mirror / peer
    rss: str = ""  # peak RSS, mirror / peer
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "figure": self.figure,
            "target": self.target,
            "runs": self.runs,
            "mirror": self.mirror,
            "peer": self.peer,
            "ratio": self.ratio,
            "met": self.met,
            "cpu": self.cpu,
            "peak_rss": self.rss,
            "error": self.error,
            "data": self.data,
        }


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def gigabytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / MB:.1f} MB"


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def warm(paths: Iterable[Path]) -> None:
    """Read files (folders: every file under them) once, so a run finds them in the page cache."""
    for path in paths:
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                with open(f, "rb", buffering=0) as src:
                    while src.read(8 << 20):
                        pass


@dataclass
class Pair:
    """The runs of mirror and of its peer for one figure."""

    mirror: list[Run] = field(default_factory=list)
    peer: list[Run] = field(default_factory=list)

    def fill(self, row: Row, *, limit: float) -> Row:
        """A time row: medians, mirror / peer ratio against `limit`, CPU and peak RSS of both sides."""
        m, p = median(r.seconds for r in self.mirror), median(r.seconds for r in self.peer)
        n_m, n_p = len(self.mirror), len(self.peer)
        row.runs = str(n_m) if n_m == n_p else f"{n_m} (peer {n_p})"
        row.mirror, row.peer = f"{m:.2f} s", f"{p:.2f} s"
        row.ratio = f"{m / p:.2f}"
        row.met = m / p <= limit
        cpu_m, cpu_p = median(r.cpu for r in self.mirror), median(r.cpu for r in self.peer)
        row.cpu = f"{cpu_m:.1f} s / {cpu_p:.1f} s"
        rss_m, rss_p = median(r.peak_rss for r in self.mirror), median(r.peak_rss for r in self.peer)
        row.rss = f"{rss_m / MB:.0f} MB / {rss_p / MB:.0f} MB"
        row.data = {
            "time_ratio": m / p,
            "mirror_seconds": [r.seconds for r in self.mirror],
            "peer_seconds": [r.seconds for r in self.peer],
            "mirror_cpu_seconds": [r.cpu for r in self.mirror],
            "peer_cpu_seconds": [r.cpu for r in self.peer],
            "mirror_peak_rss": [r.peak_rss for r in self.mirror],
            "peer_peak_rss": [r.peak_rss for r in self.peer],
        }
        return row


class Bench:
    """The work dir, the data, the hub and the runs of one `make bench`."""

    def __init__(
        self, scale: Scale, work: Path, data: Dataset, hub: LoopbackHub, say: Callable[[str], None]
    ) -> None:
        self.scale = scale
        self.work = work
        self.data = data
        self.hub = hub
        self.say = say
        self.runs_dir = work / "runs"  # stores, caches, bundles, import targets: remade by every bench
        self.logs = work / "logs"
        for d in (self.runs_dir, self.logs):
            remove(d)
            d.mkdir(parents=True)
        self.manifest_dir = work / "manifests"
        self.manifests = {m.repo_id: self.add_manifest(m.repo_id, [m.repo_id]) for m in data.models}
        self.small_manifest = self.add_manifest("small", [repo for repo, _ in data.small])
        self.main_store = self.runs_dir / "store-main"  # the last store of figure 1, exported later
        self.bundles = self.runs_dir / "bundles"
        self.bundles.mkdir()

    # ---- plumbing -------------------------------------------------------------------------------

    def add_manifest(self, name: str, repos: list[str]) -> Path:
        path = self.manifest_dir / f"{name.split('/')[-1]}.yml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("version: 1\nmodels:\n" + "".join(f"  - repo: {r}\n" for r in repos))
        return path

    def measure(
        self,
        label: str,
        cmd: Sequence[str],
        log: str,
        inputs: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        thread_stats: bool = False,
    ) -> Run:
        """Run `cmd` with a fresh HOME, the loopback hub as HF_ENDPOINT and `env` added; say and return
        what it took (with `thread_stats`, `cmd` is mirror: its busiest thread too)."""
        warm(inputs)
        os.sync()  # the previous run's dirty pages are written back now, not during this run
        child_env = fresh_env(
            self.runs_dir / "homes" / log,
            HF_ENDPOINT=self.hub.url,
            HF_HUB_DISABLE_PROGRESS_BARS="1",
            HF_HUB_ETAG_TIMEOUT="60",
            **(env or {}),
        )
        result = run(
            label, cmd, env=child_env, log=self.logs / f"{log}.log", cwd=PROJECT, thread_stats=thread_stats
        )
        busiest = ""
        if result.threads is not None:
            name, share = result.busiest()
            busiest = f", busiest thread {name} {share:.0%} of the CPU"
        self.say(
            f"  {label}: {result.seconds:.2f} s, CPU {result.cpu:.2f} s, peak RSS {result.peak_rss / MB:.0f} MB"
            + busiest
        )
        return result

    def mirror(
        self,
        label: str,
        args: Sequence[str],
        log: str,
        inputs: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
    ) -> Run:
        return self.measure(
            label, [*mirror_command(), *args, "--no-progress"], log, inputs, env, thread_stats=True
        )

    def snapshot_download(self, label: str, repos: Sequence[str], cache: Path, log: str) -> Run:
        inputs = [m.folder for m in self.data.models if m.repo_id in repos]
        cmd = [sys.executable, "-m", "bench.peer", "--cache-dir", str(cache), *repos]
        return self.measure(label, cmd, log, inputs)

    def shell(self, label: str, script: str, log: str, inputs: Sequence[Path] = ()) -> Run:
        return self.measure(label, ["bash", "-c", f"set -euo pipefail; {script}"], log, inputs)

    def sync(self, model: Model, store: Path, label: str, log: str) -> Run:
        args = ["sync", str(self.manifests[model.repo_id]), "--store", str(store)]
        return self.mirror(label, args, log, [model.folder])

    def export(
        self,
        model: Model,
        out: Path,
        label: str,
        log: str,
        extra: Sequence[str] = (),
        store: Path | None = None,
    ) -> Run:
        remove(out)
        remove(out.with_name(out.name + ".sha256"))
        root = store or self.main_store
        held = Store.at(root, clock=SYSTEM)
        blobs = [
            held.local_blob(self.hub.file_info(model.repo_id, p).sha256)
            for p in self.hub.list_files(model.repo_id)
        ]
        args = ["export", str(self.manifests[model.repo_id]), "--store", str(root), "-o", str(out), *extra]
        return self.mirror(label, args, log, blobs)

    def import_(self, bundle: Path, target: Path, label: str, log: str, extra: Sequence[str] = ()) -> Run:
        return self.mirror(label, ["import", str(bundle), "--target", str(target), *extra], log, [bundle])

    # ---- figure 1: sync of the 2 GB model ---------------------------------------------------

    def sync_two_gb(self) -> Row:
        model = self.data.two_gb
        row = Row(
            "1",
            f"sync of {gigabytes(model.size)} (4 large files + {self.scale.small_files} small), loopback hub",
            "time ratio ≤ 1.0",
        )
        pair = Pair()
        for i in range(self.scale.runs):
            store = self.runs_dir / "store-sync"
            pair.mirror.append(self.sync(model, store, f"mirror sync run {i + 1}", "1-mirror"))
            if i < self.scale.runs - 1:
                remove(store)
            else:
                store.rename(self.main_store)
            cache = self.runs_dir / "hf-cache"
            pair.peer.append(
                self.snapshot_download(f"snapshot_download run {i + 1}", [model.repo_id], cache, "1-peer")
            )
            remove(cache)
        return pair.fill(row, limit=1.0)

    # ---- figure 2: one 1 GB file over rate-limited connections ------------------------------

    def sync_rate_limited(self) -> Row:
        model = self.data.one_gb
        row = Row(
            "2",
            f"sync of one {gigabytes(model.size)} file, hub capped at {RATE_LIMIT / MB:.0f} MB/s per connection",
            "≥ 4× faster",
        )
        pair = Pair()
        self.hub.rate_limit_per_connection = RATE_LIMIT
        try:
            for i in range(self.scale.runs):
                store = self.runs_dir / "store-limited"
                pair.mirror.append(self.sync(model, store, f"mirror sync run {i + 1}", "2-mirror"))
                remove(store)
                cache = self.runs_dir / "hf-cache"
                pair.peer.append(
                    self.snapshot_download(f"snapshot_download run {i + 1}", [model.repo_id], cache, "2-peer")
                )
                remove(cache)
        finally:
            self.hub.rate_limit_per_connection = None
        pair.fill(row, limit=1.0)
        speedup = median(r.seconds for r in pair.peer) / median(r.seconds for r in pair.mirror)
        row.ratio = f"{speedup:.2f}× faster"
        row.met = speedup >= 4.0
        row.data["speedup"] = speedup
        return row

    # ---- figure 3: no-op re-sync of many small repos ----------------------------------------

    def noop_resync(self) -> list[Row]:
        repos = [repo for repo, _ in self.data.small]
        n = len(repos)
        time_row = Row("3", f"no-op re-sync of {n} small repos", "time ratio ≤ 0.5")
        req_row = Row("3b", "hub requests per repo revision in that no-op re-sync", "≤ 1")
        slow_row = Row(
            "3c",
            f"the same, {LATENCY * 1000:.0f} ms added to each hub API request (a hub across a network)",
            "≤ 0.5",
        )
        store, cache = self.runs_dir / "store-small", self.runs_dir / "hf-cache-small"
        args = ["sync", str(self.small_manifest), "--store", str(store)]
        self.mirror("mirror sync (first run, not counted)", args, "3-mirror-first")
        self.snapshot_download(
            "snapshot_download loop (first run, not counted)", repos, cache, "3-peer-first"
        )
        pair, mirror_req, peer_req = Pair(), [], []
        for i in range(self.scale.runs):
            before = len(self.hub.requests)
            pair.mirror.append(self.mirror(f"mirror sync re-run {i + 1}", args, "3-mirror"))
            mirror_req.append((len(self.hub.requests) - before) / n)
            before = len(self.hub.requests)
            pair.peer.append(
                self.snapshot_download(f"snapshot_download loop re-run {i + 1}", repos, cache, "3-peer")
            )
            peer_req.append((len(self.hub.requests) - before) / n)
        pair.fill(time_row, limit=0.5)
        req_row.runs = time_row.runs
        req_row.mirror, req_row.peer = f"{median(mirror_req):.2f}", f"{median(peer_req):.2f}"
        req_row.ratio = f"{median(mirror_req) / median(peer_req):.2f}"
        req_row.met = max(mirror_req) <= 1.0
        req_row.data = {"mirror_requests_per_revision": mirror_req, "peer_requests_per_revision": peer_req}
        slow = Pair()
        latency = self.hub.add_fault(Fault("delay", match="/api/", times=None, delay=LATENCY))
        try:
            for i in range(self.scale.runs):
                slow.mirror.append(self.mirror(f"mirror sync re-run {i + 1}, +latency", args, "3c-mirror"))
                slow.peer.append(
                    self.snapshot_download(
                        f"snapshot_download loop re-run {i + 1}, +latency", repos, cache, "3c-peer"
                    )
                )
        finally:
            latency.times = 0  # used up: the hub answers at once again
        slow.fill(slow_row, limit=0.5)
        return [time_row, req_row, slow_row]

    # ---- figures 4 and 5: export and import of the 2 GB model -------------------------------

    def export_two_gb(self) -> list[Row]:
        model = self.data.two_gb
        time_row = Row(
            "4", f"export of {gigabytes(model.size)} of bf16 safetensors (+ small files)", "time ratio ≤ 1.0"
        )
        size_row = Row("4b", "bundle size of that export", "≤ 1.0×")
        pair, mirror_sizes, peer_sizes = Pair(), [], []
        out, peer_out = self.bundles / "two-gb.tar.zst", self.bundles / "two-gb-peer.tar.zst"
        for i in range(self.scale.runs):
            pair.mirror.append(self.export(model, out, f"mirror export run {i + 1}", "4-mirror"))
            mirror_sizes.append(out.stat().st_size)
            remove(peer_out)
            script = f"tar -cf - -C {model.folder} . | zstd -T0 -3 -q -o {peer_out}"
            pair.peer.append(self.shell(f"tar | zstd -T0 -3 run {i + 1}", script, "4-peer", [model.folder]))
            peer_sizes.append(peer_out.stat().st_size)
            remove(peer_out)
        pair.fill(time_row, limit=1.0)
        m, p = median(mirror_sizes), median(peer_sizes)
        size_row.runs = time_row.runs
        size_row.mirror, size_row.peer = gigabytes(m), gigabytes(p)
        size_row.ratio = f"{m / p:.4f}"
        size_row.met = m / p <= 1.0
        size_row.data = {"mirror_bytes": mirror_sizes, "peer_bytes": peer_sizes, "source_bytes": model.size}
        return [time_row, size_row]

    def import_two_gb(self) -> Row:
        bundle = self.bundles / "two-gb.tar.zst"
        if not bundle.exists():
            raise BenchError("import: figure 4 made no bundle to import (run figure 4 too)")
        row = Row(
            "5", "import with full verification of that bundle, into a fresh HF cache", "time ratio ≤ 1.2"
        )
        pair = Pair()
        for i in range(self.scale.runs):
            target = self.runs_dir / "import"
            pair.mirror.append(self.import_(bundle, target, f"mirror import run {i + 1}", "5-mirror"))
            remove(target)
            target.mkdir()
            script = f"zstd -d -q -c {bundle} | tar -xf - -C {target}"
            pair.peer.append(self.shell(f"zstd -d | tar -x run {i + 1}", script, "5-peer", [bundle]))
            remove(target)
        return pair.fill(row, limit=1.2)

    # ---- figure 6: memory of export and import, 1 GB vs 4 GB model --------------------------

    def memory(self) -> list[Row]:
        small, big = self.data.one_gb, self.data.four_gb
        # The 4 GB model shares the 2 GB model's shards and the 1 GB file: the main store (figure 1's)
        # fetches only what it lacks. Not measured.
        if not self.main_store.exists():
            self.sync(self.data.two_gb, self.main_store, "mirror sync two-gb (setup, not counted)", "6-setup")
        for model in (small, big):
            self.sync(model, self.main_store, f"mirror sync {model.repo_id} (setup, not counted)", "6-setup")
        sizes = f"{gigabytes(small.size)} vs {gigabytes(big.size)} model"
        target = "≤ 200 MB; 4 GB ≤ 1.1× 1 GB"
        rows = {
            ("export", ""): Row("6a", f"peak RSS of export, {sizes}", target),
            ("import", ""): Row("6b", f"peak RSS of import, {sizes}", target),
            ("export", "16"): Row("6c", f"peak RSS of export --threads {THREADS}, {sizes}", target),
            ("import", "16"): Row("6d", f"peak RSS of import --threads {THREADS}, {sizes}", target),
        }
        runs: dict[tuple[str, str, str], list[Run]] = {}
        for threads in ("", str(THREADS)):
            extra = ["--threads", threads] if threads else []
            said = f" --threads {threads}" if threads else ""
            for model in (small, big):
                name = model.repo_id.split("/")[1]
                out = self.bundles / f"{name}.tar.zst"
                for i in range(self.scale.runs):
                    r = self.export(model, out, f"mirror export{said} {name} run {i + 1}", "6-export", extra)
                    runs.setdefault(("export", threads, name), []).append(r)
                for i in range(self.scale.runs):
                    target_dir = self.runs_dir / f"import-{name}"
                    label = f"mirror import{said} {name} run {i + 1}"
                    r = self.import_(out, target_dir, label, "6-import", extra)
                    remove(target_dir)
                    runs.setdefault(("import", threads, name), []).append(r)
                remove(out)
        s, b = small.repo_id.split("/")[1], big.repo_id.split("/")[1]
        for (what, threads), row in rows.items():
            lows, highs = runs[(what, threads, s)], runs[(what, threads, b)]
            lo, hi = median(r.peak_rss for r in lows), median(r.peak_rss for r in highs)
            row.runs = str(self.scale.runs)
            row.mirror = f"{lo / MB:.0f} MB → {hi / MB:.0f} MB"
            row.peer = "—"
            row.ratio = f"{hi / lo:.2f}"
            row.met = hi <= 200 * MB and hi / lo <= 1.1
            row.cpu = f"{median(r.cpu for r in lows):.1f} s → {median(r.cpu for r in highs):.1f} s"
            row.rss = row.mirror
            row.data = {
                "threads": int(threads) if threads else None,
                "peak_rss_small": [r.peak_rss for r in lows],
                "peak_rss_big": [r.peak_rss for r in highs],
                "seconds_small": [r.seconds for r in lows],
                "seconds_big": [r.seconds for r in highs],
                "cpu_seconds_small": [r.cpu for r in lows],
                "cpu_seconds_big": [r.cpu for r in highs],
                "small_bytes": small.size,
                "big_bytes": big.size,
            }
        return list(rows.values())

    # ---- figure 14: the busiest thread's share of the CPU -------------------------------------

    def busiest_thread(self) -> list[Row]:
        """Sync, export and import of the 2 GB model, each run telling its threads' CPU (MIRROR_THREAD_STATS):
        the busiest thread's CPU / the process's. At most 1/8: the work spreads over 8 cores or more. Export
        and import run with `--threads 16`, as on a machine of 16 cores (by default, one worker per core: on
        2 cores each of the 2 zstd workers does half the compression, whatever the rest does)."""
        threads = ["--threads", str(THREADS)]
        model = self.data.two_gb
        target = f"≤ {SHARE:.3f}"
        rows = {
            "export": Row(
                "14a",
                f"busiest thread's share of the CPU, export --threads {THREADS} of {gigabytes(model.size)}",
                target,
            ),
            "import": Row(
                "14b", f"busiest thread's share of the CPU, import --threads {THREADS} of that bundle", target
            ),
            "sync": Row("14c", f"busiest thread's share of the CPU, sync of {gigabytes(model.size)}", target),
        }
        runs: dict[str, list[Run]] = {what: [] for what in rows}
        store, bundle, target_dir = (
            self.runs_dir / "store-threads",
            self.bundles / "threads.tar.zst",
            self.runs_dir / "import-threads",
        )
        for i in range(self.scale.runs):
            remove(store)
            runs["sync"].append(self.sync(model, store, f"mirror sync run {i + 1}", "14-sync"))
            runs["export"].append(
                self.export(
                    model,
                    bundle,
                    f"mirror export --threads {THREADS} run {i + 1}",
                    "14-export",
                    threads,
                    store,
                )
            )
            label = f"mirror import --threads {THREADS} run {i + 1}"
            runs["import"].append(self.import_(bundle, target_dir, label, "14-import", threads))
            remove(target_dir)
        remove(store)
        remove(bundle)
        for what, row in rows.items():
            shares = [r.busiest() for r in runs[what]]
            share = median(s for _, s in shares)
            named = sorted({n for n, _ in shares})
            row.runs = str(self.scale.runs)
            row.mirror = f"{share:.3f} ({', '.join(named)})"
            row.peer = "—"
            row.ratio = f"{share:.3f}"
            row.met = share <= SHARE
            row.cpu = f"{median(r.cpu for r in runs[what]):.1f} s"
            row.rss = f"{median(r.peak_rss for r in runs[what]) / MB:.0f} MB"
            row.data = {
                "busiest_share": [s for _, s in shares],
                "busiest_thread": [n for n, _ in shares],
                "seconds": [r.seconds for r in runs[what]],
                "cpu_seconds": [r.cpu for r in runs[what]],
                "threads": [r.threads for r in runs[what]],
            }
        return list(rows.values())

    # ---- figure 13: export --codec bytegroup against the plain codec --------------------------

    def codec(self) -> list[Row]:
        """The 2 GB bf16 model exported and imported with `--codec bytegroup` and without (the peer column:
        the plain codec, zstd alone), then a real checkpoint (all-MiniLM-L6-v2's weights cast by torch to
        bf16, and to fp16) exported both ways: the bundle's size against the raw size."""
        model = self.data.two_gb
        if not self.main_store.exists():
            self.sync(model, self.main_store, "mirror sync two-gb (setup, not counted)", "13-setup")
        size_row = Row(
            "13", f"bundle size of {gigabytes(model.size)} of bf16, --codec bytegroup vs plain", "≤ 0.70× raw"
        )
        export_row = Row("13b", "export time, --codec bytegroup vs plain", "time ratio ≤ 1.2")
        import_row = Row("13c", "import time of that bundle, bytegroup vs plain", "time ratio ≤ 1.2")
        exports, imports = Pair(), Pair()
        sizes: dict[str, list[int]] = {"bytegroup": [], "zstd": []}
        target = self.runs_dir / "import-codec"
        for i in range(self.scale.runs):
            for codec, runs in (("zstd", exports.peer), ("bytegroup", exports.mirror)):
                out = self.bundles / f"codec-{codec}.tar.zst"
                runs.append(
                    self.export(
                        model,
                        out,
                        f"mirror export --codec {codec} run {i + 1}",
                        "13-export",
                        ["--codec", codec],
                    )
                )
                sizes[codec].append(out.stat().st_size)
            for codec, runs in (("zstd", imports.peer), ("bytegroup", imports.mirror)):
                out = self.bundles / f"codec-{codec}.tar.zst"
                runs.append(self.import_(out, target, f"mirror import ({codec}) run {i + 1}", "13-import"))
                remove(target)
        for codec in sizes:
            remove(self.bundles / f"codec-{codec}.tar.zst")
        exports.fill(export_row, limit=1.2)
        imports.fill(import_row, limit=1.2)
        coded, plain = median(sizes["bytegroup"]), median(sizes["zstd"])
        _size_row(size_row, coded, plain, model.size, self.scale.runs, limit=0.70)
        size_row.cpu, size_row.rss = export_row.cpu, export_row.rss
        return [size_row, export_row, import_row, *self._real_checkpoints()]

    def _real_checkpoints(self) -> list[Row]:
        """Rows 13d (bf16) and 13e (fp16): all-MiniLM-L6-v2 cast by torch, synced, exported both ways."""
        import safetensors.torch
        import torch

        from tests.roundtrip import minilm_folder

        weights = safetensors.torch.load_file(minilm_folder() / "model.safetensors")
        rows = []
        for row_id, dtype, name in (("13d", torch.bfloat16, "bf16"), ("13e", torch.float16, "fp16")):
            folder = self.runs_dir / "checkpoints" / name
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "model.safetensors"
            safetensors.torch.save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, path)
            checkpoint = Model(f"bench/minilm-{name}", folder)
            self.hub.add_commit(checkpoint.repo_id, [HubFile("model.safetensors", source=path)])
            self.manifests[checkpoint.repo_id] = self.add_manifest(checkpoint.repo_id, [checkpoint.repo_id])
            store = self.runs_dir / f"store-{name}"
            self.sync(checkpoint, store, f"mirror sync minilm-{name} (setup, not counted)", "13-setup")
            sizes: dict[str, int] = {}
            runs = {}
            for codec in ("bytegroup", "zstd"):
                out = self.bundles / f"minilm-{name}-{codec}.tar.zst"
                runs[codec] = self.export(
                    checkpoint,
                    out,
                    f"mirror export minilm-{name} --codec {codec}",
                    "13-real",
                    ["--codec", codec],
                    store,
                )
                sizes[codec] = out.stat().st_size
                remove(out)
            row = Row(
                row_id,
                f"bundle size of all-MiniLM-L6-v2 cast to {name} by torch, bytegroup vs plain",
                "reported",
            )
            _size_row(row, sizes["bytegroup"], sizes["zstd"], path.stat().st_size, 1, limit=None)
            coded = runs["bytegroup"]  # the row's mirror column
            row.cpu, row.rss = f"{coded.cpu:.1f} s", f"{coded.peak_rss / MB:.0f} MB"
            rows.append(row)
        return rows


def _size_row(row: Row, coded: float, plain: float, raw: int, runs: int, *, limit: float | None) -> None:
    """A size row of figure 13: each codec's bundle against the raw size; met when bytegroup's is within
    `limit` (None: reported only)."""
    row.runs = str(runs)
    row.mirror = f"{gigabytes(coded)} ({coded / raw:.3f}× raw)"
    row.peer = f"{gigabytes(plain)} ({plain / raw:.3f}× raw)"
    row.ratio = f"{coded / raw:.3f}"
    row.met = coded / raw <= limit if limit is not None else None
    row.data = {"bytegroup_bytes": coded, "zstd_bytes": plain, "raw_bytes": raw}


def start_hub(data: Dataset) -> LoopbackHub:
    """The loopback hub with every benchmark repo, files streamed from the generated folders."""
    hub = LoopbackHub().start()
    for model in data.models:
        files = [HubFile(p.relative_to(model.folder).as_posix(), source=p) for p in model.files()]
        hub.add_commit(model.repo_id, files)
    for repo, content in data.small:
        hub.add_commit(repo, content)
    return hub
