"""The serve figures of `make bench`: `mirror serve` against Debian's nginx serving the same bytes as
static files (figures 7 serve-big and 8 serve-many: aggregate download throughput of concurrent `curl`
clients), and against the project's loopback hub (figure 9 serve-meta: latency and requests/s of
concurrent `snapshot_download`s of a repo the clients already hold).

The store they serve is built here from the bench's bytes with the Store's own methods (the 1 GB file
of figure 2 as a hard link, generated random files, a 30-file repo) and removed at the end; nginx serves
hard links to its blobs under the URL paths of the Hub's resolve route, so both servers answer the very
same URLs with the very same inodes. Both servers run for the whole figure; runs alternate between them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import math
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data import small_files, tiny_safetensors
from bench.figures import MB, Bench, Row, gigabytes, median, remove, warm
from bench.measure import BenchError
from bench.servers import NGINX_MISSING, Server, free_port, nginx, serving
from mirror.clock import SYSTEM
from mirror.repo import RepoKey
from mirror.snapshot import FileRecord, Snapshot
from mirror.store import Store
from tests.hub import FileInfo, HubFile
from tests.roundtrip import PROJECT, fresh_env, mirror_command

RSS_LIMIT = 200 * MB  # the server's process tree, both figures
THROUGHPUT_TARGET = 0.8  # × nginx
CURL_FORMAT = "%{http_code} %{size_download}\\n"
CLIENT_TIMEOUT = 600.0  # seconds for a serve-meta client to get ready, or to finish its calls
BIG_REPO, MANY_REPO, META_REPO = "bench/serve-big", "bench/serve-many", "bench/serve-meta"


@dataclass(frozen=True)
class ServeScale:
    clients: int  # concurrent downloads in figures 7 and 8
    many_file_bytes: int  # each of figure 8's files (one per client)
    many_repeats: int  # how many times each figure 8 client downloads its file (one connection)
    meta_processes: int  # client processes of figure 9 ...
    meta_threads: int  # ... with this many threads each: processes × threads concurrent snapshot_downloads
    meta_calls: int  # snapshot_downloads per thread and run
    meta_files: int  # files of figure 9's repo


SCALES = {
    "full": ServeScale(32, 32_000_000, 16, 4, 16, 30, 30),
    "quick": ServeScale(4, 1_000_000, 2, 2, 2, 3, 30),
}


# ---- pure parts ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, linearly interpolated between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def curl_command(url: str, repeats: int) -> list[str]:
    """One client: `curl` fetching `url` `repeats` times over one connection, the bodies thrown away,
    one line `STATUS BYTES` per transfer."""
    cmd = ["curl", "-s", "-w", CURL_FORMAT]
    for _ in range(repeats):
        cmd += [url, "-o", "/dev/null"]
    return cmd


def parse_curl(text: str) -> list[tuple[int, int]]:
    """The (HTTP status, bytes received) of each transfer in the output of `curl_command`."""
    out = []
    for line in text.splitlines():
        if line.strip():
            status, size = line.split()
            out.append((int(status), int(float(size))))
    return out


def rate(nbytes: float, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f} GB/s"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# ---- the runs --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """A file both servers serve: its URL path and its record."""

    path: str  # /{repo}/resolve/main/{file}
    record: FileRecord


@dataclass(frozen=True)
class Sample:
    """One run against one server: what the clients saw and what the server's process tree used."""

    seconds: float
    nbytes: int
    cpu: float
    peak_rss: int
    extra: Mapping[str, float]


def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line a client prints, "" if it prints none within `timeout` seconds or exits."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


class ServeBench:
    """The serve figures of one `make bench` (the store they share is built on first use)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.scale = SCALES[bench.scale.name]
        self.runs = bench.scale.runs
        self.workers = os.cpu_count() or 1
        base = bench.runs_dir / "serve"
        self.store_root, self.static, self.meta_folder, self.homes = (
            base / "store",
            base / "static",
            base / "meta-repo",
            base / "homes",
        )
        self.base = base
        self.files: dict[str, list[Served]] = {}

    def cleanup(self) -> None:
        remove(self.base)

    # ---- the store, and nginx's view of it -------------------------------------------------------

    def _ensure_store(self) -> None:
        if self.files:
            return
        self.bench.say("  building the served store")
        store = Store.at(self.store_root, clock=SYSTEM)
        one = self.bench.data.one_gb
        big = self.bench.hub.file_info(one.repo_id, "model.safetensors")
        assert big.source is not None
        temp = store.temp_path("big")
        os.link(big.source, temp)  # the same inode: no copy
        self._add(store, BIG_REPO, [(big.path, temp, big)])
        many = []
        for i in range(self.scale.clients):
            temp = store.temp_path(f"many-{i}")
            rng = np.random.default_rng(i)
            with open(temp, "wb") as f:
                left = self.scale.many_file_bytes
                while left:
                    f.write(rng.bytes(min(left, 8 << 20)))
                    left -= min(left, 8 << 20)
            path = f"shard-{i:03d}.bin"
            many.append((path, temp, FileInfo.from_hub_file(HubFile(path, source=temp))))
        self._add(store, MANY_REPO, many)
        self.meta_folder.mkdir(parents=True)
        meta = small_files(self.bench.scale, 8, 4096, self.scale.meta_files - 1)
        meta["model.safetensors"] = tiny_safetensors(0)  # one LFS file, as a real repo has
        entries: list[tuple[str, Path, FileInfo]] = []
        for path, content in meta.items():
            (self.meta_folder / path).parent.mkdir(parents=True, exist_ok=True)
            (self.meta_folder / path).write_bytes(content)
            temp = store.temp_path(f"meta-{len(entries)}")
            temp.write_bytes(content)
            entries.append((path, temp, FileInfo.from_hub_file(HubFile(path, data=content))))
        self._add(store, META_REPO, entries)

    def _add(self, store: Store, repo: str, entries: list[tuple[str, Path, FileInfo]]) -> None:
        """Record a commit of `repo` holding `entries` (their temp files become blobs) on `main`, and link
        each blob into nginx's root under the same URL path."""
        records = []
        for path, temp, info in entries:
            store.add_blob(temp, info.sha256)
            records.append(FileRecord(path, info.size, info.sha256, info.oid, info.lfs))
        records.sort(key=lambda r: r.path)
        listing = "".join(f"{r.path}\0{r.oid}\n" for r in records)
        commit = hashlib.sha1(f"{repo}\n{listing}".encode()).hexdigest()
        now = SYSTEM.now_iso()
        key = RepoKey("huggingface", "model", repo)
        store.write_snapshot(Snapshot("huggingface", "model", repo, commit, tuple(records), True, now))
        store.set_refs(key, {"main": commit}, now)
        served = []
        for r in records:
            url_path = f"/{repo}/resolve/main/{r.path}"
            link = self.static / url_path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(store.local_blob(r.sha256), link)
            served.append(Served(url_path, r))
        self.files[repo] = served

    # ---- servers ---------------------------------------------------------------------------------

    def _env(self, name: str) -> dict[str, str]:
        return fresh_env(self.homes / name, HF_HUB_DISABLE_PROGRESS_BARS="1")

    @contextlib.contextmanager
    def _mirror(self) -> Iterator[Server]:
        port = free_port()
        cmd = [
            *mirror_command(),
            "serve",
            "--store",
            str(self.store_root),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]
        with serving("mirror serve", cmd, port, "/", env=self._env("mirror"), log=self._log("mirror")) as s:
            yield s

    @contextlib.contextmanager
    def _nginx(self, ready: str) -> Iterator[Server | None]:
        """nginx on the static root, or None when it is not installed (the figure says so)."""
        try:
            with nginx(
                self.static,
                self.workers,
                ready,
                temp=self.base,
                env=self._env("nginx"),
                log=self._log("nginx"),
            ) as s:
                yield s
        except BenchError as e:
            if str(e) != NGINX_MISSING:
                raise
            self.bench.say(f"  {NGINX_MISSING}")
            yield None

    @contextlib.contextmanager
    def _loopback(self) -> Iterator[Server]:
        port = free_port()
        cmd = [sys.executable, "-m", "tests.hub", str(self.meta_folder), META_REPO, "--port", str(port)]
        ready = f"/api/models/{META_REPO}/revision/main"
        with serving("loopback hub", cmd, port, ready, env=self._env("hub"), log=self._log("loopback")) as s:
            yield s

    def _log(self, name: str) -> Path:
        return self.bench.logs / f"serve-{name}.log"

    # ---- figures 7 and 8: download throughput ------------------------------------------------------

    def serve_big(self) -> Row:
        self._ensure_store()
        (big,) = self.files[BIG_REPO]
        n = self.scale.clients
        row = Row(
            "7",
            f"serve-big: {n} clients downloading one {gigabytes(big.record.size)} file, aggregate throughput "
            f"(`mirror serve --workers {self.workers}` / nginx)",
            f"≥ {THROUGHPUT_TARGET}× nginx; RSS ≤ {RSS_LIMIT / MB:.0f} MB",
        )
        return self._throughput(row, [big] * n, 1)

    def serve_many(self) -> Row:
        self._ensure_store()
        files = self.files[MANY_REPO]
        reps = self.scale.many_repeats
        row = Row(
            "8",
            f"serve-many: {len(files)} clients each downloading its own {gigabytes(files[0].record.size)} file "
            f"{reps}× (one connection), aggregate throughput",
            f"≥ {THROUGHPUT_TARGET}× nginx; RSS ≤ {RSS_LIMIT / MB:.0f} MB",
        )
        return self._throughput(row, files, reps)

    def _throughput(self, row: Row, files: list[Served], repeats: int) -> Row:
        blobs = sorted({Store.at(self.store_root, clock=SYSTEM).local_blob(f.record.sha256) for f in files})
        samples: dict[str, list[Sample]] = {"mirror": [], "nginx": []}
        with self._mirror() as mirror, self._nginx(files[0].path) as peer:
            servers = {"mirror": mirror, "nginx": peer}
            for i in range(self.runs):
                for side, server in servers.items():
                    if server is None:
                        continue
                    check = files[i % len(files)]
                    self._verify(server, check)
                    warm(blobs)
                    with server.watch() as watch:
                        seconds, nbytes = self._download(server, files, repeats)
                    extra = {"largest": watch.peak_largest, "peak_pss": watch.peak_pss}
                    s = Sample(seconds, nbytes, watch.cpu, watch.peak_rss, extra)
                    samples[side].append(s)
                    self.bench.say(
                        f"  {side} run {i + 1}: {gigabytes(nbytes)} in {seconds:.2f} s = {rate(nbytes, seconds)}, "
                        f"server CPU {s.cpu:.1f} s, peak RSS {s.peak_rss / MB:.0f} MB (PSS {watch.peak_pss / MB:.0f} MB)"
                    )
        m = median(s.nbytes / s.seconds for s in samples["mirror"])
        rss_m = max(s.peak_rss for s in samples["mirror"])
        row.runs = str(self.runs)
        row.mirror = f"{m / 1e9:.2f} GB/s"
        row.data = {
            side: [
                {
                    "seconds": s.seconds,
                    "bytes": s.nbytes,
                    "cpu_seconds": s.cpu,
                    "peak_rss": s.peak_rss,
                    **s.extra,
                }
                for s in runs
            ]
            for side, runs in samples.items()
        }
        cpu_m = median(s.cpu for s in samples["mirror"])
        if not samples["nginx"]:
            row.peer, row.met = NGINX_MISSING, None
            row.cpu, row.rss = f"{cpu_m:.1f} s / —", f"{rss_m / MB:.0f} MB / —"
            return row
        p = median(s.nbytes / s.seconds for s in samples["nginx"])
        row.peer = f"{p / 1e9:.2f} GB/s"
        row.ratio = f"{m / p:.2f}"
        row.met = m / p >= THROUGHPUT_TARGET and rss_m <= RSS_LIMIT
        row.cpu = f"{cpu_m:.1f} s / {median(s.cpu for s in samples['nginx']):.1f} s"
        row.rss = f"{rss_m / MB:.0f} MB / {max(s.peak_rss for s in samples['nginx']) / MB:.0f} MB"
        row.data["throughput_ratio"] = m / p
        return row

    def _download(self, server: Server, files: list[Served], repeats: int) -> tuple[float, int]:
        """Every client at once, one `curl` process each; the wall time from the first start to the last
        exit and the bytes received (every transfer must be a 200 of the whole file)."""
        cmds = [curl_command(server.url + f.path, repeats) for f in files]
        start = time.perf_counter()
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in cmds]
        outs = [p.communicate() for p in procs]
        seconds = time.perf_counter() - start
        total = 0
        for f, p, (out, err) in zip(files, procs, outs, strict=True):
            got = parse_curl(out.decode())
            want = [(200, f.record.size)] * repeats
            if p.returncode != 0 or got != want:
                raise BenchError(
                    f"{server.name}: curl {server.url}{f.path} exited {p.returncode}, got {got[:3]} "
                    f"(want {repeats} × 200 of {f.record.size} bytes): {err.decode()[-500:]}"
                )
            total += sum(size for _, size in got)
        return seconds, total

    def _verify(self, server: Server, served: Served) -> None:
        """GET one file and check its sha256 against the store's record (outside the timed runs)."""
        host, port = server.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request("GET", served.path)
            resp = conn.getresponse()
            h = hashlib.sha256()
            while block := resp.read(1 << 20):
                h.update(block)
        finally:
            conn.close()
        if resp.status != 200 or h.hexdigest() != served.record.sha256:
            raise BenchError(
                f"{server.name}: GET {served.path} answered {resp.status} with sha256 {h.hexdigest()}, "
                f"not the file's {served.record.sha256}"
            )

    # ---- figure 9: metadata requests of cached snapshot_downloads ---------------------------------

    def serve_meta(self) -> list[Row]:
        self._ensure_store()
        sc = self.scale
        clients = sc.meta_processes * sc.meta_threads
        what = (
            f"serve-meta: {clients} concurrent `snapshot_download` of a cached {sc.meta_files}-file repo "
            f"({sc.meta_processes} processes × {sc.meta_threads} threads)"
        )
        target = f"≤ 1.0 (the loopback hub is the floor); RSS ≤ {RSS_LIMIT / MB:.0f} MB"
        rows = [
            Row("9", f"{what}, p50 latency", target),
            Row("9b", "p99 latency of those calls", "≤ 1.0"),
            Row("9c", "requests/s the server answered in them (requests per call in the JSON)", "≥ 1.0"),
        ]
        samples: dict[str, list[Sample]] = {"mirror": [], "loopback": []}
        with self._mirror() as mirror, self._loopback() as loopback:
            for i in range(self.runs):
                for side, server in (("mirror", mirror), ("loopback", loopback)):
                    s = self._meta_run(server, f"{side}-{i}")
                    samples[side].append(s)
                    self.bench.say(
                        f"  {side} run {i + 1}: p50 {millis(s.extra['p50'])}, p99 {millis(s.extra['p99'])}, "
                        f"{s.extra['requests'] / s.seconds:.0f} requests/s "
                        f"({s.extra['requests'] / s.extra['calls']:.1f} per call), server CPU {s.cpu:.1f} s, "
                        f"peak RSS {s.peak_rss / MB:.0f} MB (PSS {s.extra['peak_pss'] / MB:.0f} MB)"
                    )
        m, p = samples["mirror"], samples["loopback"]
        rss = f"{max(s.peak_rss for s in m) / MB:.0f} MB / {max(s.peak_rss for s in p) / MB:.0f} MB"
        cpu = f"{median(s.cpu for s in m):.1f} s / {median(s.cpu for s in p):.1f} s"
        rss_ok = max(s.peak_rss for s in m) <= RSS_LIMIT
        for row, key, fmt, better_low in (
            (rows[0], "p50", millis, True),
            (rows[1], "p99", millis, True),
            (rows[2], "rps", lambda v: f"{v:.0f}/s", False),
        ):
            vm = median(s.extra[key] for s in m)
            vp = median(s.extra[key] for s in p)
            row.runs, row.mirror, row.peer, row.ratio = str(self.runs), fmt(vm), fmt(vp), f"{vm / vp:.2f}"
            row.met = (vm / vp <= 1.0) if better_low else (vm / vp >= 1.0)
            row.cpu, row.rss = cpu, rss
            row.data = {"mirror": [s.extra for s in m], "loopback": [s.extra for s in p], "ratio": vm / vp}
        rows[0].met = bool(rows[0].met and rss_ok)
        for side, runs in samples.items():
            rows[0].data[f"{side}_peak_rss"] = [s.peak_rss for s in runs]
            rows[0].data[f"{side}_cpu_seconds"] = [s.cpu for s in runs]
        return rows

    def _meta_run(self, server: Server, name: str) -> Sample:
        """Start the client processes, let them fill their caches, then release them all at once."""
        sc = self.scale
        procs: list[subprocess.Popen[str]] = []
        with contextlib.ExitStack() as stack:
            for k in range(sc.meta_processes):
                home = self.homes / f"meta-{name}-{k}"
                remove(home)
                env = fresh_env(
                    home, HF_ENDPOINT=server.url, HF_HOME=str(home / "hf"), HF_HUB_DISABLE_PROGRESS_BARS="1"
                )
                cmd = [
                    sys.executable, "-m", "bench.metaclient", META_REPO,
                    "--threads", str(sc.meta_threads), "--calls", str(sc.meta_calls),
                ]  # fmt: skip
                log = stack.enter_context(open(self._log(f"meta-client-{name}-{k}"), "wb"))
                proc = subprocess.Popen(
                    cmd,
                    env=env,
                    cwd=PROJECT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                )
                stack.callback(_end, proc)
                procs.append(proc)
            for proc in procs:
                if _line(proc, CLIENT_TIMEOUT) != "ready":
                    raise BenchError(
                        f"serve-meta: a client of {server.name} did not start; see {self._log('meta-client-*')}"
                    )
            with server.watch() as watch:
                for proc in procs:
                    assert proc.stdin is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                results = []
                for proc in procs:
                    line = _line(proc, CLIENT_TIMEOUT)
                    code = proc.wait(CLIENT_TIMEOUT)
                    if code != 0 or not line:
                        raise BenchError(
                            f"serve-meta: a client of {server.name} exited {code}: {line[-800:]}"
                        )
                    results.append(json.loads(line))
        latencies = [v for r in results for v in r["latencies"]]
        requests = sum(r["requests"] for r in results)
        seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
        extra = {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "rps": requests / seconds,
            "requests": requests,
            "calls": len(latencies),
            "seconds": seconds,
            "peak_pss": watch.peak_pss,
        }
        return Sample(seconds, 0, watch.cpu, watch.peak_rss, extra)
