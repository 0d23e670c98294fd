"""HICC's own history: one row per target per poll in SQLite, kept within a time window and a file size.

Counters are stored as the targets report them (cumulative); rates are the
difference between the first and last sample of a chart bucket, so a missed
poll or a restart costs one bucket, not the chart.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    t REAL NOT NULL, target TEXT NOT NULL, up INTEGER NOT NULL,
    bytes_in REAL, bytes_out REAL, lag REAL, fill REAL, backlog REAL
);
CREATE INDEX IF NOT EXISTS samples_t ON samples (t);
"""


@dataclass(frozen=True)
class Sample:
    target: str
    up: bool
    bytes_in: float = 0.0
    bytes_out: float = 0.0
    lag: float = 0.0
    fill: float = 0.0
    backlog: float = 0.0


class TimeSeries:
    """Append samples, trim by age and size, read bucketed series for charts."""

    def __init__(self, path: str, retention: float, max_bytes: int) -> None:
        self.path = path
        self.retention = retention
        self.max_bytes = max_bytes
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._appends = 0

    def append(self, samples: Sequence[Sample], t: float | None = None) -> None:
        t = time.time() if t is None else t
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO samples VALUES (?,?,?,?,?,?,?,?)",
                [(t, s.target, int(s.up), s.bytes_in, s.bytes_out, s.lag, s.fill, s.backlog) for s in samples])
            self._db.execute("COMMIT")
            self._appends += 1
            if self._appends % 30 == 1:
                self._trim(t)

    def _trim(self, now: float) -> None:
        self._db.execute("DELETE FROM samples WHERE t < ?", (now - self.retention,))
        pages, page_size = (self._db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        if pages * page_size > self.max_bytes:
            # Drop the oldest quarter of the window and give the pages back.
            lo, hi = self._db.execute("SELECT min(t), max(t) FROM samples").fetchone()
            if lo is not None:
                self._db.execute("DELETE FROM samples WHERE t < ?", (lo + (hi - lo) / 4,))
            self._db.execute("VACUUM")

    def size_bytes(self) -> int:
        with self._lock:
            pages, page_size = (self._db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        return pages * page_size

    def rows(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM samples").fetchone()[0]

    def series(self, targets: Iterable[str] | None, window: float, buckets: int = 120,
               now: float | None = None) -> dict[str, list[tuple[float, float, float, float]]]:
        """Per target: ``(bucket start, bytes/s out, max lag, up fraction)`` over the last ``window`` seconds."""
        now = time.time() if now is None else now
        width = max(window / buckets, 1.0)
        start = now - window
        # Per bucket the counter's last value and time; the rate is the change since the previous bucket
        # (a bucket may hold one sample or none when buckets are narrower than the poll interval).
        sql = ("SELECT target, CAST((t - ?) / ? AS INTEGER) AS b, max(bytes_out), max(t), "
               "max(lag), avg(up) FROM samples WHERE t >= ? GROUP BY target, b ORDER BY target, b")
        with self._lock:
            rows = self._db.execute(sql, (start - width, width, start - width)).fetchall()
        wanted = set(targets) if targets is not None else None
        out: dict[str, list[tuple[float, float, float, float]]] = {}
        prev: tuple[str, float, float] | None = None
        for target, b, counter, t_last, lag, up in rows:
            if wanted is not None and target not in wanted:
                continue
            counter = counter or 0.0
            if prev is not None and prev[0] == target and t_last > prev[2]:
                rate = max(0.0, counter - prev[1]) / (t_last - prev[2])  # a restart (counter reset) reads 0
                out.setdefault(target, []).append((start + (b - 1) * width, rate, lag or 0.0, up))
            prev = (target, counter, t_last)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
