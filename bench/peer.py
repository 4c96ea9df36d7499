"""The peer of `mirror sync`: huggingface_hub's `snapshot_download`, as people run it, one repo after
another. `python -m bench.peer --cache-dir DIR REPO...` (HF_ENDPOINT and HF_HUB_DISABLE_XET come from
the environment, as the client reads them at import time)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer")
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("repos", nargs="+")
    args = parser.parse_args(argv)
    from huggingface_hub import snapshot_download

    for repo in args.repos:
        snapshot_download(repo, cache_dir=args.cache_dir, max_workers=args.max_workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
