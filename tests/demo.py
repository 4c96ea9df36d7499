"""`make demo`: the main job end to end against the built-in loopback hub, with a real small model.

A loopback hub on 127.0.0.1 serves the real sentence-transformers/all-MiniLM-L6-v2 files over the Hugging
Face Hub API. `mirror sync` downloads them into a store, `mirror export` packs a bundle, the hub is shut
down, `mirror import` restores the bundle into an empty HF cache under a fresh HOME, and transformers
loads the model offline by its repo id and gives the same embeddings as the original files.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from tests.hub import LoopbackHub
from tests.roundtrip import MINILM, PROJECT, embeddings, fresh_env, minilm_folder, offline_env, run_mirror


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def show(text: str) -> None:
    print("    " + text.strip().replace("\n", "\n    "), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=PROJECT / "demo-work")
    workdir: Path = parser.parse_args().workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    store, bundle, cache = workdir / "store", workdir / "minilm.tar.zst", workdir / "airgap-home" / "hf-cache"
    manifest = PROJECT / "manifests" / "minilm.yml"
    started = time.monotonic()

    with LoopbackHub() as hub:
        hub.add_folder(MINILM, minilm_folder())
        step(f"connected side: a loopback hub at {hub.url} serves {MINILM}")
        env = fresh_env(workdir / "connected-home", HF_ENDPOINT=hub.url)
        step(f"mirror sync {manifest.relative_to(PROJECT)} --store {store}")
        show(run_mirror("sync", str(manifest), "--store", str(store), env=env).stdout)
        step(f"mirror export {manifest.relative_to(PROJECT)} -o {bundle}")
        show(run_mirror("export", str(manifest), "--store", str(store), "-o", str(bundle), env=env).stdout)
    step("the hub is gone: from here on nothing can be downloaded")

    air = offline_env(workdir / "airgap-home", HF_HUB_CACHE=str(cache))
    step(f"mirror inspect {bundle.name}")
    show(run_mirror("inspect", str(bundle), env=air).stdout)
    step(f"air-gapped side: mirror import {bundle.name}  (HF_HUB_CACHE={cache})")
    show(run_mirror("import", str(bundle), env=air).stdout)

    step(f'HF_HUB_OFFLINE=1: AutoModel.from_pretrained("{MINILM}")')
    imported = embeddings(MINILM, air)
    original = embeddings(str(minilm_folder()), air)
    same = imported == original
    show(f"embedding[0][:4] = {[round(x, 6) for x in imported[0][:4]]}")
    show(f"identical to the original model's embeddings: {same}")
    if not same:
        raise SystemExit("demo FAILED: the imported model gives different embeddings")
    step(f"demo passed in {time.monotonic() - started:.1f}s (work files in {workdir})")


if __name__ == "__main__":
    main()
