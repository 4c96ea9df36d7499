"""One client process of the serve-meta figure: `python -m bench.metaclient REPO --threads N --calls K`.

HF_ENDPOINT and HF_HOME come from the environment (the client reads them at import time). The process
first fills its HF_HOME with one `snapshot_download` of REPO (not counted), prints `ready` and waits for a
line on stdin; then N threads each run K `snapshot_download`s of REPO, now answered from the cache after
the metadata requests the client makes for a cached repo. It prints one JSON line: the latency of each
call (seconds), the HTTP requests the client sent (counted by a response hook on huggingface_hub's
shared session) and when the calls started and ended (`time.monotonic()`, the same clock in every
process of the machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.metaclient")
    parser.add_argument("repo")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--calls", type=int, required=True, help="snapshot_downloads per thread")
    args = parser.parse_args(argv)

    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import _http

    requests = 0
    lock = threading.Lock()

    def count(response: Any) -> None:
        nonlocal requests
        with lock:
            requests += 1

    def client() -> Any:
        session = _http.default_client_factory()
        session.event_hooks["response"].append(count)
        return session

    _http.set_client_factory(client)
    first = snapshot_download(args.repo)  # fills this process's cache: not counted
    with lock:
        requests = 0
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1

    latencies: list[float] = []
    errors: list[str] = []

    def worker() -> None:
        for _ in range(args.calls):
            t = time.monotonic()
            try:
                if snapshot_download(args.repo) != first:
                    raise RuntimeError("snapshot_download returned another folder")
            except Exception as e:  # noqa: BLE001 - reported: the bench fails the figure
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                return
            elapsed = time.monotonic() - t
            with lock:
                latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.monotonic()
    result = {"latencies": latencies, "requests": requests, "start": start, "end": end, "errors": errors[:5]}
    print(json.dumps(result), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
