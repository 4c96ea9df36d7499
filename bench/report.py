"""The table `make bench` prints (Markdown), with the machine and versions it was measured on."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bench.figures import Row

COLUMNS = (
    "#",
    "figure",
    "runs",
    "mirror (median)",
    "peer (median)",
    "ratio",
    "target",
    "met",
    "CPU mirror / peer",
    "peak RSS mirror / peer",
)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = 0
    zstd = subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip()
    import huggingface_hub

    from mirror import __version__

    return {
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / (1 << 30)),
        "python": platform.python_version(),
        "mirror": __version__,
        "huggingface_hub": huggingface_hub.__version__,
        "zstd": zstd,
    }


def _commit() -> str:
    """The commit measured, marked when the work tree differs from it (what `make bench` really ran)."""
    from tests.roundtrip import PROJECT

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=PROJECT, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "mirror")
    return f"{commit} + uncommitted changes to mirror/" if dirty else commit


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r.error is not None:
            first = r.error.splitlines()[0].split(": `")[0] if r.error else "failed"
            cells = [r.id, r.figure, "", f"FAILED: {first} (see results.json)", "", "", r.target, "✗", "", ""]
        else:
            met = "—" if r.met is None else ("✓" if r.met else "✗")
            cells = [r.id, r.figure, r.runs, r.mirror, r.peer, r.ratio, r.target, met, r.cpu, r.rss]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def markdown(rows: Sequence[Row], info: dict[str, Any], wall: float, command: str) -> str:
    minutes, secs = divmod(round(wall), 60)
    return "\n".join(
        [
            table(rows),
            "",
            f"`{command}` on {info['date']}: {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB, "
            f"Python {info['python']}, mirror {info['mirror']} at {info['commit']}, "
            f"huggingface_hub {info['huggingface_hub']}, "
            f"{info['zstd'].strip('* ')}. Wall time of the whole run: {minutes} min {secs:02d} s; 1-minute "
            f"load average {info['load_average'][0]} before, {info['load_average'][1]} after (anything else "
            "running on the machine shows in the times).",
            "Ratios are mirror / peer (time), except figure 2 (peer / mirror: how many times faster), "
            "figure 6 (4 GB model / 1 GB model), figures 7-9 (mirror / peer of the figure shown: "
            "throughput, latency, requests/s), figure 10 (the store in the S3 server / on local disk, both "
            "mirror), figure 11 (throughput with --redirect / streamed through the server), figure 12 (the "
            "scan's time / the rest of the sync's, in %) and figure 13 (13, 13d, 13e: the --codec bytegroup "
            "bundle's size / the raw size, the plain one's in the peer column; 13b, 13c: time with --codec "
            "bytegroup / with the plain codec); figure 14 has no peer: its ratio is the busiest thread's "
            "CPU / the process's, the thread named in the mirror column (6c, 6d: figure 6 with --threads "
            "16). CPU is user + system seconds of the command (figures 7-9 and "
            "11: of the server's process tree during the runs, their peak RSS the tree's, summed; figure 12: "
            "of the scan call / of the whole sync). All runs are "
            "warm-cache (the page cache cannot be dropped without root; each run's inputs are read just "
            "before it). MB and GB are 10^6 and 10^9 bytes.",
        ]
    )
