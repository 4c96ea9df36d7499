"""Figure 12's scan, timed alone: `python -m bench.scantime STORE OUT`.

STORE holds the one revision a `mirror sync` just stored. This process runs on it the very function the
sync runs on its main thread once a revision's files are in (`mirror.sync.scan.check_revision`: the
validation scan of the store's blobs, the hub's own scan over HTTP, the scan record written, the policy's
verdict), after removing the record that sync wrote (else it would be used again, unread). It times that
call alone, with a clock around it, and writes to OUT (JSON): its wall and CPU seconds, the hub request's
part, the growth of this process's peak RSS during the call, the findings. The interpreter's start, the
imports and a first request to the hub (the sync's connection was open) come before the clock starts.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main(argv: list[str]) -> int:
    store_dir, out = Path(argv[0]), Path(argv[1])
    from mirror.clock import SYSTEM
    from mirror.http import TokenHint
    from mirror.sources.hub_scan import HubScan
    from mirror.sources.huggingface import HuggingFaceSource
    from mirror.store import Store
    from mirror.sync.plan import Target
    from mirror.sync.scan import check_revision

    store = Store.at(store_dir, clock=SYSTEM)
    requests = store.requests()
    if len(requests) != 1:
        print(
            f"scantime: {store_dir} holds {len(requests)} revisions, not the one a sync stored",
            file=sys.stderr,
        )
        return 1
    (request,) = requests
    key = request.key
    commit = store.read_refs(key)[request.revision].commit
    snap = store.read_snapshot(key, commit)
    assert snap is not None
    store.storage.delete(store.scan_key(key, commit))  # the sync's record: check_revision would reuse it
    source = HuggingFaceSource(os.environ["HF_ENDPOINT"], None, TokenHint("HF_TOKEN", sent=False))
    source.commit_of(key.repo_id, key.repo_type, commit)  # not timed: the HTTP stack up, a connection open
    hub_seconds: list[float] = []

    def hub_scan() -> HubScan:
        start = time.perf_counter()
        try:
            return source.hub_scan(key.repo_id, key.repo_type, commit, (f.path for f in snap.files))
        finally:
            hub_seconds.append(time.perf_counter() - start)

    rss_before = _peak_rss()
    wall, cpu = time.perf_counter(), time.process_time()
    checked = check_revision(
        store,
        Target(key, request.revision, (request,)),
        commit,
        snap.files,
        hub_scan,
        {key.repo_id},
        store.storage.staging(),
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not checked.scanned:
        print("scantime: the revision was not scanned (a recorded scan was used)", file=sys.stderr)
        return 1
    result = {
        "seconds": wall,
        "cpu_seconds": cpu,
        "hub_scan_seconds": sum(hub_seconds),
        "peak_rss_before": rss_before,
        "peak_rss_growth": _peak_rss() - rss_before,
        "files": len(snap.files),
        "bytes": sum(f.size for f in snap.files),
        "findings": [f.to_json() for f in checked.scan.findings],
        "denied": not checked.verdict.ok,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
