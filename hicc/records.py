"""Records search over demux output with DuckDB: by datatype, time range, source and text, with an hourly histogram.

Demux writes ``<demux>/datatype=<datatype>/date=<day>/hour=<HH>/part-….<parquet|jsonl>``
(earlier versions ``<demux>/<datatype>/<yyyy-mm-dd>/part-NNNNN.<jsonl|parquet>``; both are read)
with provenance fields (``_source``, ``_stream``, ``_offset``,
``_timestamp``...).  DuckDB reads JSON Lines as raw objects
(``read_ndjson_objects``) and Parquet rows as JSON, so one query works on
records of any shape.  Every value from the form is a bound parameter; the
datatype, which becomes part of a path, must be a demux partition name.  A
search running longer than ``timeout`` is interrupted.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_DATATYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
HOUR_MS = 3_600_000


class SearchError(ValueError):
    """A search the form asked for that cannot run (bad input, missing DuckDB, no data)."""


@dataclass
class Query:
    datatype: str = ""  # "" = every datatype
    since: str = ""  # ISO date/time, UTC
    until: str = ""
    source: str = ""  # exact name, or a glob with * and ?
    text: str = ""  # case-insensitive substring of the whole record
    offset: int = 0
    limit: int = 50


@dataclass
class Result:
    total: int = 0
    histogram: list[tuple[int, int]] = field(default_factory=list)  # (hour start ms, records)
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def parse_time(text: str, name: str) -> int | None:
    """``2026-12-05``, ``2026-12-05T03:12`` or ``2026-12-05 03:12:00`` (UTC) -> epoch ms."""
    text = text.strip()
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise SearchError(f"{name}: expected a date and time such as 2026-12-05T03:12, got {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class RecordSearch:
    def __init__(self, root: str, timeout: float = 10.0) -> None:
        self.root = root.rstrip("/")
        self.timeout = timeout

    def available(self) -> str | None:
        """None when searching works, else why not."""
        try:
            import duckdb  # noqa: F401
        except ImportError:
            return "record search needs DuckDB: pip install 'logflume[hicc]'"
        return None

    def _source_sql(self, con: Any, datatype: str) -> tuple[str, list[Any]]:
        """A FROM clause yielding one ``json`` text column per record, for JSON Lines and Parquet parts."""
        import glob as globmod

        if datatype and not _DATATYPE.match(datatype):
            raise SearchError(f"datatype: expected a demux partition name, got {datatype!r}")
        # demux's Hive layout (datatype=…/date=…/hour=…) and the older <datatype>/<day>/ one
        bases = [f"{self.root}/datatype={datatype or '*'}/*/*", f"{self.root}/{datatype or '[!_]*'}/*"]
        parts, params = [], []
        remote = "://" in self.root and not self.root.startswith("file://")
        if remote:
            import fsspec

            fs, _ = fsspec.core.url_to_fs(self.root)
            con.register_filesystem(fs)
        for base in bases:
            jsonl, parquet = f"{base}/part-*.jsonl", f"{base}/part-*.parquet"
            found = fs.glob if remote else globmod.glob
            if found(jsonl):
                parts.append("SELECT json FROM read_ndjson_objects(?)")
                params.append(jsonl)
            if found(parquet):
                parts.append("SELECT CAST(to_json(p) AS VARCHAR) AS json FROM read_parquet(?, union_by_name=true, "
                             "hive_partitioning=false) p")
                params.append(parquet)
        if not parts:
            raise SearchError("no demuxed records" + (f" of datatype {datatype}" if datatype else "") + " yet")
        return "(" + " UNION ALL ".join(parts) + ")", params

    def search(self, q: Query) -> Result:
        import time

        import duckdb

        t0 = time.monotonic()
        since, until = parse_time(q.since, "from"), parse_time(q.until, "to")
        con = duckdb.connect()
        timer = threading.Timer(self.timeout, con.interrupt)
        timer.start()
        try:
            src, params = self._source_sql(con, q.datatype)
            where, wparams = ["TRUE"], []
            ts = "TRY_CAST(json->>'_timestamp' AS BIGINT)"
            if since is not None:
                where.append(f"{ts} >= ?")
                wparams.append(since)
            if until is not None:
                where.append(f"{ts} < ?")
                wparams.append(until)
            if q.source:
                where.append("json->>'_source' GLOB ?")
                wparams.append(q.source)
            if q.text:
                where.append("json ILIKE ? ESCAPE '\\'")
                wparams.append(_like(q.text))
            cond = " AND ".join(where)
            con.execute(f"CREATE TEMP TABLE hits AS SELECT json, {ts} AS ts FROM {src} WHERE {cond}",
                        params + wparams)
            total = con.execute("SELECT count(*) FROM hits").fetchone()[0]
            hist = con.execute(f"SELECT ts // {HOUR_MS} * {HOUR_MS} AS h, count(*) FROM hits "
                               "WHERE ts IS NOT NULL GROUP BY h ORDER BY h").fetchall()
            rows = con.execute("SELECT json FROM hits ORDER BY ts, json->>'_source', json->>'_stream', "
                               "TRY_CAST(json->>'_offset' AS BIGINT) LIMIT ? OFFSET ?",
                               [q.limit, q.offset]).fetchall()
        except duckdb.InterruptException:
            raise SearchError(f"search took longer than {self.timeout:g}s and was stopped; narrow it down") from None
        except duckdb.Error as exc:
            raise SearchError(f"search failed: {exc}") from None
        finally:
            timer.cancel()
            con.close()
        return Result(total, [(int(h), int(n)) for h, n in hist], [json.loads(r[0]) for r in rows],
                      time.monotonic() - t0)

    def datatypes(self) -> list[str]:
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(self.root)
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
        except (OSError, ValueError):
            return []
        names = [n.split("=", 1)[1] if n.startswith("datatype=") else n for n in names]
        return sorted(n for n in set(names) if _DATATYPE.match(n))
