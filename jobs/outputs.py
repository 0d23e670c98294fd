"""Demux output files: JSON Lines, Parquet or SequenceFile (Text/Text), one per partition and task.

A task writes ``<output>/<partition...>/part-NNNNN.<ext>`` under a hidden
temporary name and renames it once complete, so readers (and Spark) never see
half a file and a re-run simply replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from logflume.processor import encode_json, flatten_rows

FORMATS = {"jsonl": "jsonl", "parquet": "parquet", "seq": "seq"}


_json = encode_json


def require_format(fmt: str) -> None:
    """Fail early, with the fix, when a format's optional dependency is missing."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ValueError("--format parquet needs pyarrow: pip install 'logflume[parquet]'") from None


class PartitionWriter:
    """Buffers nothing for JSON Lines and SequenceFile; Parquet gathers a task's rows, then writes once."""

    def __init__(self, fs: Any, root: str, partition: tuple[str, ...], part: int, fmt: str) -> None:
        self.fs = fs
        self.fmt = fmt
        folder = "/".join([root.rstrip("/"), *partition])
        name = f"part-{part:05d}.{FORMATS[fmt]}"
        self.path = f"{folder}/{name}"
        self.tmp = f"{folder}/.{name}.tmp"
        self.count = 0
        fs.makedirs(folder, exist_ok=True)
        self._rows: list[dict[str, Any]] = []
        self._lines: list[str] = []
        self._f: Any = None
        self._seq: Any = None
        if fmt == "jsonl":
            self._f = fs.open(self.tmp, "w", encoding="utf-8")
        elif fmt == "seq":
            from sinks.sequencefile import TEXT, SequenceFileWriter

            self._f = fs.open(self.tmp, "wb")
            self._seq = SequenceFileWriter(self._f, key_class=TEXT, value_class=TEXT,
                                           metadata={"logflume.writer": "demux", "logflume.format": "1"},
                                           sync_marker=_marker(self.path))

    def write(self, record: dict[str, Any]) -> None:
        self.count += 1
        if self.fmt == "jsonl":
            self._lines.append(_json(record))
            if len(self._lines) >= 512:
                self._flush_lines()
        elif self.fmt == "seq":
            prov = {k: record[k] for k in ("_source", "_stream", "_epoch", "_offset") if k in record}
            self._seq.append(_json(prov), _json(record))
        else:
            self._rows.append(record)

    def _flush_lines(self) -> None:
        self._lines.append("")
        self._f.write("\n".join(self._lines))
        self._lines.clear()

    def close(self) -> str:
        """Finish the file and give it its final name; returns that name."""
        if self._lines:
            self._flush_lines()
        if self.fmt == "parquet":
            _write_parquet(self.fs, self.tmp, self._rows)
            self._rows = []
        else:
            if self._seq is not None:
                self._seq.close()
            self._f.close()
        self.fs.mv(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            if self._f is not None:
                self._f.close()
            if self.fs.exists(self.tmp):
                self.fs.rm(self.tmp)
        except OSError:
            pass


def write_partitions(records: Iterable[tuple[tuple[str, ...], Any]], fs: Any, root: str, index: int,
                     fmt: str) -> list[str]:
    """Write (partition, record) pairs into one part file per partition; all or nothing.

    The task body of every engine: on any error the part files written so far
    are removed, so a retried task never leaves half of its output behind.
    """
    writers: dict[tuple[str, ...], PartitionWriter] = {}
    try:
        for part, record in records:
            w = writers.get(part)
            if w is None:
                w = writers[part] = PartitionWriter(fs, root, part, index, fmt)
            w.write(record)
        return [w.close() for _, w in sorted(writers.items())]
    except BaseException:
        for w in writers.values():
            w.abort()
        raise


def _marker(path: str) -> bytes:
    import hashlib

    return hashlib.md5(path.encode()).digest()


def _write_parquet(fs: Any, path: str, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = flatten_rows(rows)
    columns: dict[str, None] = {}
    for r in flat:
        for k in r:
            columns.setdefault(k)
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in flat]) if flat else pa.table({})
    with fs.open(path, "wb") as f:
        pq.write_table(table, f)


def read_records(fs: Any, path: str) -> list[dict[str, Any]]:
    """Read back one demux output file (for tests, checks and the benchmark)."""
    if path.endswith(".jsonl"):
        with fs.open(path, "r", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as f:
            return pq.read_table(f).to_pylist()
    from sinks.sequencefile import SequenceFileReader

    with fs.open(path, "rb") as f:
        return [json.loads(v) for _, v in SequenceFileReader(f)]
