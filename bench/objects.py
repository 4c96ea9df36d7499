"""The object-storage figures of `make bench`: the same `mirror` commands with the store in a bucket of an
S3 server on 127.0.0.1 against the store on local disk (figure 10: sync, export, import into a store),
and `mirror serve --store s3://...` answering downloads with a 302 to a presigned URL (`--redirect`,
the bytes flow from the object store) against streaming them through the server (figure 11).

The S3 server is moto's standalone server (`python -m moto.server`), a subprocess started here and
stopped at the end; it is Python, so its own speed is most of what these figures measure: they say what
a store in a bucket costs against a local disk on the same machine, not what a real object store does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench.data import Model
from bench.figures import MB, Bench, Pair, Row, gigabytes, median, remove
from bench.measure import BenchError, Run
from bench.servers import Server, free_port, serving
from bench.serving import curl_command, parse_curl, rate
from tests.roundtrip import mirror_command
from tests.s3server import S3Server, s3_env

BUCKET = "mirror-bench"
CLIENTS = {"full": 8, "quick": 2}  # concurrent downloads of figure 11


class ObjectBench:
    """Figures 10 and 11 of one `make bench`; the S3 server runs from the first figure to `cleanup`."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.base = bench.runs_dir / "objects"
        self._server: contextlib.ExitStack | None = None
        self.endpoint = ""
        self.served_store: str | None = None  # figure 11's store: the last one figure 10 synced, if it ran
        self._n = 0

    def cleanup(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        remove(self.base)

    # ---- plumbing ---------------------------------------------------------------------------------

    def _ensure_server(self) -> None:
        if self._server is not None:
            return
        stack = contextlib.ExitStack()
        port = free_port()
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        log = self.bench.logs / "s3-server.log"
        server: Server = stack.enter_context(
            serving("moto S3 server", cmd, port, "/", env=self._env(), log=log)
        )
        self._server, self.endpoint = stack, server.url
        self._client = S3Server(self.endpoint, server=None).client()
        self._client.create_bucket(Bucket=BUCKET)

    def _env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}

    def _url(self, name: str) -> str:
        """A fresh prefix of the bucket for one run (the S3 server keeps what it is given until it stops)."""
        self._n += 1
        return f"s3://{BUCKET}/{name}-{self._n}"

    def _drop(self, url: str) -> None:
        """Delete what a run left under `url` (the S3 server keeps objects in files under /tmp)."""
        prefix = url.removeprefix(f"s3://{BUCKET}/")
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                self._client.delete_object(Bucket=BUCKET, Key=obj["Key"])

    def _mirror(self, label: str, args: list[str], log: str, inputs: list[Path]) -> Run:
        return self.bench.mirror(label, args, log, inputs, env=s3_env(self.endpoint))

    # ---- figure 10: sync, export and import with the store in a bucket -----------------------------

    def store_figures(self) -> list[Row]:
        self._ensure_server()
        model: Model = self.bench.data.one_gb
        size = gigabytes(model.size)
        rows = {
            "sync": Row("10a", f"sync of {size} into a store in the S3 server / on local disk", "reported"),
            "export": Row(
                "10b", "export of that model from the store in the S3 server / on local disk", "reported"
            ),
            "import": Row(
                "10c", "import of that bundle into a store in the S3 server / on local disk", "reported"
            ),
        }
        pairs = {k: Pair() for k in rows}
        manifest = str(self.bench.manifests[model.repo_id])
        self.base.mkdir(parents=True, exist_ok=True)
        for i in range(self.bench.scale.runs):
            n = i + 1
            s3_store, local_store = self._url("store"), self.base / "store"
            remove(local_store)
            pairs["sync"].mirror.append(
                self._mirror(
                    f"sync to S3 run {n}",
                    ["sync", manifest, "--store", s3_store],
                    "10-sync-s3",
                    [model.folder],
                )
            )
            pairs["sync"].peer.append(
                self._mirror(
                    f"sync to disk run {n}",
                    ["sync", manifest, "--store", str(local_store)],
                    "10-sync-local",
                    [model.folder],
                )
            )
            s3_bundle, local_bundle = f"{self._url('bundle')}.tar.zst", self.base / "bundle.tar.zst"
            remove(local_bundle)
            pairs["export"].mirror.append(
                self._mirror(
                    f"export from S3 run {n}",
                    ["export", manifest, "--store", s3_store, "-o", s3_bundle],
                    "10-export-s3",
                    [],
                )
            )
            pairs["export"].peer.append(
                self._mirror(
                    f"export from disk run {n}",
                    ["export", manifest, "--store", str(local_store), "-o", str(local_bundle)],
                    "10-export-local",
                    [local_store],
                )
            )
            s3_target, local_target = self._url("imported"), self.base / "imported"
            remove(local_target)
            pairs["import"].mirror.append(
                self._mirror(
                    f"import into S3 run {n}",
                    ["import", str(local_bundle), "--layout", "store", "--target", s3_target],
                    "10-import-s3",
                    [local_bundle],
                )
            )
            pairs["import"].peer.append(
                self._mirror(
                    f"import into disk run {n}",
                    ["import", str(local_bundle), "--layout", "store", "--target", str(local_target)],
                    "10-import-local",
                    [local_bundle],
                )
            )
            for url in (s3_bundle, s3_target, self.served_store):
                if url is not None:
                    self._drop(url)
            self.served_store = s3_store  # kept for figure 11
        for what, row in rows.items():
            pairs[what].fill(row, limit=float("inf"))
            row.met = None
        remove(self.base)
        return list(rows.values())

    # ---- figure 11: serve --redirect vs streaming over a bucket ----------------------------------

    def redirect(self) -> Row:
        self._ensure_server()
        model: Model = self.bench.data.one_gb
        if self.served_store is None:
            self.served_store = self._url("store")
            manifest = str(self.bench.manifests[model.repo_id])
            self._mirror(
                "sync to S3 (setup, not counted)",
                ["sync", manifest, "--store", self.served_store],
                "11-setup",
                [],
            )
        big = max(model.files(), key=lambda p: p.stat().st_size)
        path = f"/{model.repo_id}/resolve/main/{big.relative_to(model.folder).as_posix()}"
        clients = CLIENTS[self.bench.scale.name]
        row = Row(
            "11",
            f"serve over the S3 server: {clients} clients downloading one {gigabytes(big.stat().st_size)} file, "
            "aggregate throughput (`--redirect` to presigned URLs / streamed through the server)",
            "≥ 1.0",
        )
        seconds: dict[str, list[float]] = {"redirect": [], "stream": []}
        cpu: dict[str, list[float]] = {"redirect": [], "stream": []}
        rss: dict[str, list[int]] = {"redirect": [], "stream": []}
        nbytes = 0
        for i in range(self.bench.scale.runs):
            for mode in ("redirect", "stream"):
                with self._serve(mode == "redirect") as server, server.watch() as watch:
                    took, nbytes = self._download(server, path, clients, big.stat().st_size)
                seconds[mode].append(took)
                cpu[mode].append(watch.cpu)
                rss[mode].append(watch.peak_rss)
                self.bench.say(
                    f"  {mode} run {i + 1}: {rate(nbytes, took)}, server CPU {watch.cpu:.1f} s, "
                    f"peak RSS {watch.peak_rss / MB:.0f} MB"
                )
        r, s = median(seconds["redirect"]), median(seconds["stream"])
        row.runs = str(self.bench.scale.runs)
        row.mirror, row.peer = rate(nbytes, r), rate(nbytes, s)
        row.ratio = f"{s / r:.2f}"
        row.met = s / r >= 1.0
        row.cpu = f"{median(cpu['redirect']):.1f} s / {median(cpu['stream']):.1f} s"
        row.rss = f"{median(rss['redirect']) / MB:.0f} MB / {median(rss['stream']) / MB:.0f} MB"
        row.data = {
            "redirect_seconds": seconds["redirect"],
            "stream_seconds": seconds["stream"],
            "redirect_server_cpu_seconds": cpu["redirect"],
            "stream_server_cpu_seconds": cpu["stream"],
            "redirect_server_peak_rss": rss["redirect"],
            "stream_server_peak_rss": rss["stream"],
            "bytes": nbytes,
        }
        return row

    @contextlib.contextmanager
    def _serve(self, redirect: bool) -> Iterator[Server]:
        port = free_port()
        cmd = [
            *mirror_command(),
            "serve",
            "--store",
            self.served_store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if redirect:
            cmd.append("--redirect")
        env = {**self._env(), **s3_env(self.endpoint)}
        log = self.bench.logs / f"11-serve-{'redirect' if redirect else 'stream'}.log"
        with serving("mirror serve", cmd, port, "/", env=env, log=log) as server:
            yield server

    def _download(self, server: Server, path: str, clients: int, size: int) -> tuple[float, int]:
        """`clients` curl processes fetching `path` at once (following a redirect); wall time and bytes."""
        cmd = ["curl", "-L", *curl_command(server.url + path, 1)[1:]]
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(clients)]
        outs = [p.communicate()[0] for p in procs]
        took = time.perf_counter() - start
        got = [t for out in outs for t in parse_curl(out)]
        if len(got) != clients or any(t != (200, size) for t in got):
            raise BenchError(
                f"serve over S3: the downloads of {path} answered {got}, not {clients} × (200, {size})"
            )
        return took, clients * size
