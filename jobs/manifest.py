"""Archive's commit protocol: what is done is written down only after it is durable.

The manifest lives in ``<output>/_manifest/`` (hidden from Hadoop and Spark):

* ``manifest.json`` — the committed state: batches committed, every input
  file archived (URL -> size), per stream the byte ranges kept and the archive
  files holding them (so later runs keep dropping duplicates and can re-read
  kept bytes to compare), and running totals.  Replaced atomically.
* ``pending.json`` — the batch in progress: its number and its inputs, written
  before any output of the batch.

Every output of batch N carries N in its name.  A batch writes each output
under a hidden temporary name and renames it; only then is ``manifest.json``
replaced with the inputs marked done; then ``pending.json`` goes.  After a
crash anywhere (or any exception), the next run finds ``pending.json`` and
rolls that batch back: it removes every output named with its number, which
no committed state refers to, then plans batches afresh from the committed
state.  Nothing is lost (inputs are done only after their outputs exist),
nothing doubles (a rolled-back batch leaves nothing behind), and nothing a
batch did can stall the next run (a rollback needs none of its inputs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from jobs.errors import JobError
from logflume.statefile import write_atomic

MANIFEST_DIR = "_manifest"
FORMAT = 2
#: Formats this version reads: 1 kept ranges without their archive files (trusted, never re-read).
READABLE = (1, 2)


@dataclass
class Committed:
    """Everything ``manifest.json`` holds."""

    batches: int = 0
    done: dict[str, int] = field(default_factory=dict)  # input URL -> size
    state: list[list] = field(default_factory=list)  # Deduplicator.state()
    totals: dict[str, int] = field(default_factory=dict)
    job: str = "archive"  # the job whose output this manifest commits (demux uses the same protocol)

    def to_json(self) -> dict[str, Any]:
        out = {"format": FORMAT, "batches": self.batches, "done": dict(sorted(self.done.items())),
               "state": self.state, "totals": self.totals}
        if self.job != "archive":
            out["job"] = self.job
        return out


@dataclass(frozen=True)
class Pending:
    batch: int
    inputs: dict[str, int]  # input URL -> size


class Manifest:
    """Reads and atomically replaces the two manifest files under ``<output>/_manifest``."""

    def __init__(self, fs: Any, output_root: str) -> None:
        self.fs = fs
        self.dir = f"{output_root.rstrip('/')}/{MANIFEST_DIR}"
        self.committed_path = f"{self.dir}/manifest.json"
        self.pending_path = f"{self.dir}/pending.json"

    def _read(self, path: str) -> dict[str, Any] | None:
        if not self.fs.exists(path):
            return None
        try:
            with self.fs.open(path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise JobError(f"{path}: unreadable manifest: {exc}") from None
        if not isinstance(data, dict) or data.get("format") not in READABLE:
            raise JobError(f"{path}: not a logflume job manifest of format "
                           f"{' or '.join(map(str, READABLE))}")
        return data

    def _write(self, path: str, data: dict[str, Any]) -> None:
        """Write to a temporary name, make it durable, rename over ``path``."""
        self.fs.makedirs(self.dir, exist_ok=True)
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        if is_local(self.fs):
            write_atomic(self.fs._strip_protocol(path), body)
            return
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(body)
            sync_file(f)
        self.fs.mv(tmp, path)

    def load(self) -> Committed:
        data = self._read(self.committed_path)
        if data is None:
            return Committed()
        try:
            return Committed(int(data["batches"]), {str(k): int(v) for k, v in data["done"].items()},
                             list(data["state"]), {str(k): int(v) for k, v in data["totals"].items()},
                             str(data.get("job", "archive")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JobError(f"{self.committed_path}: malformed manifest: {exc!r}") from None

    def pending(self) -> Pending | None:
        data = self._read(self.pending_path)
        if data is None:
            return None
        try:
            return Pending(int(data["batch"]), {str(k): int(v) for k, v in data["inputs"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JobError(f"{self.pending_path}: malformed pending batch: {exc!r}") from None

    def begin(self, pending: Pending) -> None:
        self._write(self.pending_path, {"format": FORMAT, "batch": pending.batch, "inputs": pending.inputs})

    def commit(self, committed: Committed, clear_pending: bool = True) -> None:
        """Replace ``manifest.json``; then drop ``pending.json`` unless the job still has to finish the
        batch (demux publishes its staged outputs after the commit and clears it itself)."""
        self._write(self.committed_path, committed.to_json())
        if clear_pending:
            self.clear_pending()

    def clear_pending(self) -> None:
        if self.fs.exists(self.pending_path):
            self.fs.rm(self.pending_path)


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is the local disk, where state files take the one durable atomic write."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def sync_file(f: Any) -> None:
    """fsync a local file before it is renamed into place (a no-op for remote stores, atomic by PUT)."""
    f.flush()
    fileno = getattr(f, "fileno", None)
    if fileno is None:
        return
    try:
        os.fsync(fileno())
    except (OSError, ValueError, AttributeError, NotImplementedError):
        pass
