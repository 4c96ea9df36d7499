"""Figure 12 (scan-overhead): what the validation scan adds to a sync (issue 15's targets).

Per run and model: `mirror sync` of the model into a fresh store, timed end to end as figure 1 times it
(the scan included: a sync cannot run without it); then `python -m bench.scantime` runs the sync's own
check (`mirror.sync.scan.check_revision`) again on that store, its record removed, and times that call
alone. The scan's share of the sync is scan / (sync - scan). The models: figure 1's 2 GB of safetensors,
and the same weights as one `pytorch_model.bin` written by `torch.save` (zip format, and the legacy one),
made once with torch (without torch, those two rows say so).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from bench.data import TORCH_MISSING, Checkpoints, Model, ensure_checkpoints
from bench.figures import MB, Bench, Row, gigabytes, median, remove
from bench.measure import Run
from tests.hub import HubFile

SAFETENSORS_TARGET = 0.10  # the scan's time over the sync's without it
PICKLE_TARGET = 0.25


@dataclass(frozen=True)
class Sample:
    sync: Run  # the whole `mirror sync`, scan included
    scan: dict[str, Any]  # what bench.scantime wrote: the scan's seconds, CPU, RSS growth, findings
    scan_run: Run  # the bench.scantime process (its peak RSS)

    @property
    def base(self) -> float:
        """The sync's seconds without its scan."""
        return self.sync.seconds - float(self.scan["seconds"])


class ScanBench:
    """Figure 12 over a `Bench`: its hub, data and runs."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def _checkpoints(self) -> Checkpoints | None:
        """The pickle checkpoints, on the hub with a manifest each; None when torch is not importable."""
        bench = self.bench
        try:
            made = ensure_checkpoints(
                bench.data.two_gb, bench.work / f"checkpoints-{bench.scale.name}", bench.say
            )
        except ImportError:
            bench.say(f"  {TORCH_MISSING}: the pickle checkpoints are not measured")
            return None
        for model in (made.zip, made.legacy):
            if model.repo_id not in bench.manifests:
                files = [HubFile(p.relative_to(model.folder).as_posix(), source=p) for p in model.files()]
                bench.hub.add_commit(model.repo_id, files)
                bench.manifests[model.repo_id] = bench.add_manifest(model.repo_id, [model.repo_id])
        return made

    def _sample(self, model: Model, run: int, name: str) -> Sample:
        bench = self.bench
        store = bench.runs_dir / "store-scan"
        remove(store)
        sync = bench.sync(model, store, f"mirror sync {name} run {run}", f"12-sync-{name}")
        out = bench.runs_dir / "scan.json"
        remove(out)
        cmd = [sys.executable, "-m", "bench.scantime", str(store), str(out)]
        scan_run = bench.measure(f"its scan alone, run {run}", cmd, f"12-scan-{name}")
        scan = json.loads(out.read_text())
        bench.say(
            f"    scan {scan['seconds']:.3f} s (hub's scan {scan['hub_scan_seconds']:.3f} s), CPU "
            f"{scan['cpu_seconds']:.3f} s, peak RSS growth {scan['peak_rss_growth'] / MB:.1f} MB, "
            f"{len(scan['findings'])} findings"
        )
        remove(store)
        return Sample(sync, scan, scan_run)

    def scan_overhead(self) -> list[Row]:
        bench = self.bench
        made = self._checkpoints()
        two = bench.data.two_gb
        rows = {
            "safetensors": Row(
                "12a",
                f"scan-overhead: the scan's share of the sync of {gigabytes(two.size)} of safetensors "
                "(figure 1's model): scan / sync without it",
                f"≤ {SAFETENSORS_TARGET:.0%}",
            ),
            "zip": Row(
                "12b",
                "the same for those weights as one torch.save checkpoint (`pytorch_model.bin`, zip format)",
                f"≤ {PICKLE_TARGET:.0%}",
            ),
            "legacy": Row(
                "12c",
                "the same, a legacy torch.save checkpoint (`_use_new_zipfile_serialization=False`)",
                f"≤ {PICKLE_TARGET:.0%}",
            ),
        }
        models = {"safetensors": two}
        if made is not None:
            models |= {"zip": made.zip, "legacy": made.legacy}
        samples: dict[str, list[Sample]] = {name: [] for name in models}
        for i in range(bench.scale.runs):
            for name, model in models.items():
                samples[name].append(self._sample(model, i + 1, name))
        for name, row in rows.items():
            if name in samples:
                limit = SAFETENSORS_TARGET if name == "safetensors" else PICKLE_TARGET
                fill(row, samples[name], models[name].size, limit)
            else:
                row.mirror, row.peer, row.met = "—", TORCH_MISSING, None
        return list(rows.values())


def fill(row: Row, samples: list[Sample], size: int, limit: float) -> Row:
    """The row of one model: the scan's median seconds, the sync's without it, their ratio against `limit`;
    CPU and peak RSS of the scan (its process) and of the sync."""
    scan = median(float(s.scan["seconds"]) for s in samples)
    base = median(s.base for s in samples)
    row.runs = str(len(samples))
    row.mirror = f"scan {_seconds(scan)}"
    row.peer = f"sync {base:.2f} s"
    row.ratio = f"{scan / base:.1%}"
    row.met = scan / base <= limit
    scan_cpu = median(float(s.scan["cpu_seconds"]) for s in samples)
    row.cpu = f"{_seconds(scan_cpu)} / {median(s.sync.cpu for s in samples):.1f} s"
    scan_rss = median(s.scan_run.peak_rss for s in samples)
    row.rss = f"{scan_rss / MB:.0f} MB / {median(s.sync.peak_rss for s in samples) / MB:.0f} MB"

    def per(k: str) -> list[Any]:
        return [s.scan[k] for s in samples]

    row.data = {
        "overhead": scan / base,
        "bytes": size,
        "sync_seconds": [s.sync.seconds for s in samples],
        "sync_cpu_seconds": [s.sync.cpu for s in samples],
        "sync_peak_rss": [s.sync.peak_rss for s in samples],
        "scan_seconds": per("seconds"),
        "scan_cpu_seconds": per("cpu_seconds"),
        "hub_scan_seconds": per("hub_scan_seconds"),
        "scan_process_peak_rss": [s.scan_run.peak_rss for s in samples],
        "scan_peak_rss_growth": per("peak_rss_growth"),
        "findings": samples[-1].scan["findings"],
    }
    return row


def _seconds(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
