"""SqliteChannel: a durable channel in one SQLite file (standard library only).

Rows are inserted when a put transaction commits, so row ids are commit
order; a take hands out the smallest id nobody holds, a rollback simply
gives its ids back (they return to the head, in order), and a committed take
deletes its rows.  Committed chunks survive a crash of the process.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from typing import ClassVar

from logflume.channel import ByteBudget, Channel, Transaction
from logflume.chunk import Chunk
from logflume.errors import ChannelClosed
from logflume.settings import Setting, Str


class SqliteChannel(Channel):
    durable: ClassVar[bool] = True
    settings: ClassVar[dict[str, Setting]] = {
        "path": Setting(Str(), "", "Database file (default: channel.db in the channel's state dir)"),
    }

    def configure(self) -> None:
        self._cond = threading.Condition()
        self._closed = False
        self._budget = ByteBudget(self._cond, self.config.capacity, self.name, lambda: self._closed)
        self._free: list[tuple[int, int]] = []  # heap of (row id, size) nobody holds

    def start(self) -> None:
        path = self.config.path or str(self.context.state_dir("channel", self.name) / "channel.db")
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, meta BLOB, data BLOB)")
        with self._cond:
            self._closed = False
            self._free = [(i, n) for i, n in self._db.execute("SELECT id, length(data) FROM chunks ORDER BY id")]
            self._budget.used = sum(n for _, n in self._free)

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def transaction(self) -> Transaction:
        return _SqliteTransaction(self)

    def size_bytes(self) -> int:
        with self._cond:
            return sum(n for _, n in self._free)

    def size_chunks(self) -> int:
        with self._cond:
            return len(self._free)

    # -- used by transactions -------------------------------------------------------------------

    def _insert(self, chunks: list[Chunk]) -> None:
        with self._cond:
            self._db.execute("BEGIN")
            ids = [self._db.execute("INSERT INTO chunks (meta, data) VALUES (?, ?)",
                                    (c.metadata_json(), bytes(c.data))).lastrowid for c in chunks]
            self._db.execute("COMMIT")
            for i, c in zip(ids, chunks, strict=True):
                heapq.heappush(self._free, (i, len(c)))
            self._cond.notify_all()

    def _take(self, timeout: float | None) -> tuple[int, int, Chunk] | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._free:
                if self._closed:
                    raise ChannelClosed(self.name)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 1.0)
            i, n = heapq.heappop(self._free)
            meta, data = self._db.execute("SELECT meta, data FROM chunks WHERE id = ?", (i,)).fetchone()
            return i, n, Chunk.from_metadata_json(meta, data)

    def _delete(self, held: list[tuple[int, int]]) -> None:
        with self._cond:
            self._db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i, _ in held])
        self._budget.release(sum(n for _, n in held))

    def _give_back(self, held: list[tuple[int, int]]) -> None:
        with self._cond:
            for item in held:
                heapq.heappush(self._free, item)
            self._cond.notify_all()


class _SqliteTransaction(Transaction):
    def __init__(self, channel: SqliteChannel) -> None:
        self._ch = channel
        self._puts: list[Chunk] = []
        self._held: list[tuple[int, int]] = []
        self._done = False

    def put(self, chunk: Chunk, timeout: float | None = None) -> None:
        self._check()
        self._ch._budget.reserve(len(chunk), timeout)
        self._puts.append(chunk)

    def take(self, timeout: float | None = 0.0) -> Chunk | None:
        self._check()
        got = self._ch._take(timeout)
        if got is None:
            return None
        i, n, chunk = got
        self._held.append((i, n))
        return chunk

    def commit(self) -> None:
        self._check()
        self._done = True
        if self._puts:
            self._ch._insert(self._puts)
        if self._held:
            self._ch._delete(self._held)

    def rollback(self) -> None:
        if self._done:
            return
        self._done = True
        if self._puts:
            self._ch._budget.release(sum(len(c) for c in self._puts))
        if self._held:
            self._ch._give_back(self._held)

    def _check(self) -> None:
        if self._done:
            raise RuntimeError("transaction already committed or rolled back")
