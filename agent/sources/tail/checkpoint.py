"""The position file: where each generation's committed data ends, written atomically.

One JSON document per source (``positions.json`` in the source's state
directory), one entry per *generation*: the content of a file between two
truncations, named by its epoch and found again by its fingerprint (device and
inode are hints).  Several entries may share an inode: a file truncated by
copytruncate has its current generation and the ended one that lives on in the
copy.  The entry carries the stream the generation was first read under, so a
restart resumes it under that name wherever the file has gone.

It is replaced whole with :func:`logflume.statefile.write_atomic`, so a crash
at any moment leaves either the old or the new positions, never a torn file.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.sources.tail.identity import FileIdentity
from logflume.errors import StartupError
from logflume.statefile import write_atomic

#: 2: one entry per generation (unique epoch, ``ended`` flag; inodes may repeat); 1: one entry per inode.
FORMAT_VERSION = 2


@dataclass
class Position:
    """One generation's committed position (see docs/tail.md, "Checkpoints and guarantees")."""

    dev: int
    ino: int
    fp_len: int
    fp: str
    epoch: str
    stream: str  # the path the file had when first seen: the chunks' stream
    path: str  # where the file was last seen
    offset: int  # bytes of this epoch committed to the channel
    seq_id: int  # seq_id of the last committed chunk (== offset)
    truncations: int
    last_seen: float  # wall-clock time the file was last seen (for forget_after)
    ended: bool = False  # truncated away from its inode: it goes on only in a copy (copytruncate)

    @property
    def key(self) -> tuple[int, int]:
        """Device and inode where the generation was last read: a hint, confirmed by the fingerprint."""
        return (self.dev, self.ino)

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.dev, self.ino, self.fp_len, self.fp)


class PositionFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[Position]:
        """Positions from the last save; none when there is no file yet. A damaged file stops the start."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(raw)
            version = doc.get("version")
            if version == 1:  # one entry per inode, none ended: each is that file's current generation
                return [Position(**entry, ended=False) for entry in doc["files"]]
            if version != FORMAT_VERSION:
                raise ValueError(f"unsupported version {version!r}, expected {FORMAT_VERSION} (or 1)")
            return [Position(**entry) for entry in doc["files"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StartupError(
                f"position file {self.path} is damaged ({exc}); move it away to restart "
                f"(files are then read again from where start_at says)"
            ) from None

    def save(self, positions: list[Position]) -> None:
        """Replace the file atomically (write, fsync, rename, fsync directory)."""
        doc = {"version": FORMAT_VERSION, "files": [asdict(p) for p in positions]}
        data = json.dumps(doc, separators=(",", ":")).encode()
        write_atomic(self.path, data)


class CheckpointWriter:
    """Writes the latest submitted positions in a thread of its own, so reading never waits on fsync.

    Only the newest snapshot matters: snapshots submitted while a write is in
    progress are coalesced into one.  Submitted positions are already committed
    to the channel, so the file on disk is always at or behind the truth; after
    a crash the bytes re-read are those committed during the last write.
    """

    def __init__(self, file: PositionFile, min_interval: float, on_error: Callable[[OSError], None]) -> None:
        self.file = file
        self.min_interval = min_interval
        self.on_error = on_error
        self._cond = threading.Condition()
        self._pending: list[Position] | None = None
        self._urgent = False
        self._writing = False
        self._failed = False  # the last write failed: flush() does not wait for the retry
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"positions-{file.path.parent.name}", daemon=True)
        self._thread.start()

    def submit(self, positions: list[Position], urgent: bool = False) -> None:
        """Hand over the newest positions; ``urgent`` writes them without waiting for ``min_interval``."""
        with self._cond:
            self._pending = positions
            self._urgent = self._urgent or urgent
            self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted is on disk; False on timeout or when writing fails."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._writing:
                if self._failed and not self._writing:
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        last = 0.0
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                wait = last + self.min_interval - time.monotonic()
                if wait > 0 and not self._closed and not self._urgent:
                    self._cond.wait(wait)  # let more snapshots coalesce
                    continue
                positions, self._pending = self._pending, None
                self._urgent = False
                self._writing = True
            try:
                self.file.save(positions)
                self._failed = False
            except OSError as exc:
                self._failed = True
                self.on_error(exc)
                with self._cond:
                    if self._pending is None and not self._closed:
                        self._pending = positions  # try again with the next round
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
                    if not self._closed:
                        self._cond.wait(1.0)  # retry pace (close() wakes it)
            finally:
                last = time.monotonic()
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
