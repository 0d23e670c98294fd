"""The Store and jobs page's data: sink files, archive and demux runs (from their manifests) and outputs.

Listings are cached for :data:`CACHE_SECONDS`, so reloading the page does not
walk a large store each time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from jobs.errors import JobError
from jobs.manifest import Manifest
from jobs.sinkfiles import is_hidden, open_fs

CACHE_SECONDS = 10.0
#: Most recent files listed per output.
LATEST = 15


@dataclass
class Listing:
    url: str
    error: str = ""
    files: int = 0
    bytes: int = 0
    newest: float | None = None
    by_group: dict[str, dict[str, Any]] = field(default_factory=dict)  # day (store) or datatype (demux)
    latest: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ArchiveRuns:
    url: str
    error: str = ""
    batches: int = 0
    inputs_done: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    committed_at: float | None = None
    pending_batch: int | None = None
    errors_files: int = 0
    conflict_files: int = 0


def _mtime(info: dict[str, Any]) -> float | None:
    m = info.get("mtime") or info.get("LastModified") or info.get("created")
    if hasattr(m, "timestamp"):
        return m.timestamp()
    return float(m) if isinstance(m, (int, float)) else None


def list_outputs(url: str, suffixes: tuple[str, ...], group_depth: int) -> Listing:
    """Visible files under ``url`` ending in ``suffixes``, grouped by their first ``group_depth`` path parts."""
    out = Listing(url)
    try:
        fs, root = open_fs(url)
        if not fs.exists(root):
            out.error = "does not exist (yet)"
            return out
        found = fs.find(root, detail=True)
    except (OSError, ValueError, JobError) as exc:
        out.error = f"cannot list: {exc}"
        return out
    errors = 0
    rows = []
    for path, info in found.items():
        rel = path[len(root):].lstrip("/")
        if info.get("type") != "file" or not rel.endswith(suffixes):
            continue
        if is_hidden(rel):
            errors += rel.startswith("_errors/")
            continue
        size, mtime = int(info.get("size") or 0), _mtime(info)
        group = "/".join(rel.split("/")[:group_depth]) or "."
        g = out.by_group.setdefault(group, {"files": 0, "bytes": 0, "newest": None})
        g["files"] += 1
        g["bytes"] += size
        if mtime is not None and (g["newest"] is None or mtime > g["newest"]):
            g["newest"] = mtime
        out.files += 1
        out.bytes += size
        rows.append({"path": rel, "bytes": size, "mtime": mtime})
    out.newest = max((r["mtime"] for r in rows if r["mtime"] is not None), default=None)
    rows.sort(key=lambda r: r["mtime"] or 0, reverse=True)
    out.latest = rows[:LATEST]
    if errors:
        out.by_group["_errors"] = {"files": errors, "bytes": 0, "newest": None}
    return out


def archive_runs(url: str) -> ArchiveRuns:
    out = ArchiveRuns(url)
    try:
        fs, root = open_fs(url)
        manifest = Manifest(fs, root)
        if not fs.exists(manifest.committed_path):
            out.error = "no run yet (no manifest)"
            return out
        committed = manifest.load()
        pending = manifest.pending()
        out.committed_at = _mtime(fs.info(manifest.committed_path))
        out.errors_files = len(fs.glob(f"{root}/_errors/*.seq"))
        out.conflict_files = len(fs.glob(f"{root}/_conflicts/*.seq"))
    except (OSError, ValueError, JobError) as exc:
        out.error = str(exc)
        return out
    out.batches = committed.batches
    out.inputs_done = len(committed.done)
    out.totals = dict(committed.totals)
    out.pending_batch = pending.batch if pending else None
    return out


class JobsView:
    """Cached listings of the configured store, archive and demux URLs."""

    def __init__(self, store: str | None, archive: str | None, demux: str | None) -> None:
        self.store, self.archive, self.demux = store, archive, demux
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Any]] | None = None

    def get(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] > CACHE_SECONDS:
                self._cache = (now, {
                    "store": list_outputs(self.store, (".seq",), 1) if self.store else None,
                    "archive": archive_runs(self.archive) if self.archive else None,
                    "archive_files": list_outputs(self.archive, (".seq",), 1) if self.archive else None,
                    "demux": list_outputs(self.demux, (".jsonl", ".parquet", ".seq"), 1) if self.demux else None,
                    "demux_runs": archive_runs(self.demux) if self.demux else None,
                })
            return self._cache[1]
