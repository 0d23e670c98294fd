"""Demux output files: JSON Lines, Parquet or SequenceFile (Text/Text), one per partition and task.

A task writes ``<output>/<partition...>/part-NNNNN.<ext>`` under a hidden
staged name; the demux commit publishes it (:mod:`jobs.demux`), so readers
(and Spark) never see half a file.
"""

from __future__ import annotations

from typing import Any

from logflume.processor import encode_json

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


def _marker(path: str) -> bytes:
    import hashlib

    return hashlib.md5(path.encode()).digest()


# ---- the batch path: Arrow tables -> staged part files, published by the demux commit -------------------------

#: Rows per Parquet row group at most (fewer when the memory bound flushes a partition early).
ROW_GROUP_ROWS = 256 * 1024
_STAGED = ".staged"


def staged_name(path: str) -> str:
    """Where a part file waits until its batch is committed: hidden, beside its final name."""
    folder, name = path.rsplit("/", 1)
    return f"{folder}/.{name}{_STAGED}"


def final_name(staged: str) -> str:
    folder, name = staged.rsplit("/", 1)
    return f"{folder}/{name[1:-len(_STAGED)]}"


class TableFile:
    """One partition's part file of a task, written from Arrow tables under its staged name.

    Parquet: zstd, one row group per :data:`ROW_GROUP_ROWS` rows buffered (or
    fewer when :class:`TableFiles` flushes it to bound memory).  A table whose
    columns differ from the file's (JSON objects with other keys) starts the
    next file, ``part-…-1``, and so on.
    """

    def __init__(self, fs: Any, folder: str, stem: str, fmt: str) -> None:
        self.fs, self.folder, self.stem, self.fmt = fs, folder, stem, fmt
        self.files: list[str] = []  # staged names, finished or open
        self.rows = 0
        self._f: Any = None
        self._w: Any = None
        self._schema: Any = None
        self._pending: list[Any] = []
        self.pending_rows = 0
        self.pending_bytes = 0

    def add(self, table: Any) -> None:
        if self._schema is not None and not table.schema.equals(self._schema):
            self.flush()
            self._close_file()
        if self._schema is None:
            self._open(table.schema)
        self._pending.append(table)
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        self.rows += table.num_rows
        if self.pending_rows >= ROW_GROUP_ROWS:
            self.flush()

    def _open(self, schema: Any) -> None:
        n = len(self.files)
        name = f"{self.stem}{'' if n == 0 else f'-{n}'}.{FORMATS[self.fmt]}"
        path = staged_name(f"{self.folder}/{name}")
        self.fs.makedirs(self.folder, exist_ok=True)
        self._f = self.fs.open(path, "wb")
        self._schema = schema
        self.files.append(path)
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            # Without the Arrow schema in the file, readers see the provenance dictionary arrays
            # (jobs.records) as the strings they are; every other column type maps to Parquet one to one.
            self._w = pq.ParquetWriter(self._f, schema, compression="zstd", store_schema=False)
        elif self.fmt == "seq":
            from logflume.sequencefile import TEXT, SequenceFileWriter

            self._w = SequenceFileWriter(self._f, key_class=TEXT, value_class=TEXT,
                                         metadata={"logflume.writer": "demux", "logflume.format": "1"},
                                         sync_marker=_marker(path))

    def flush(self) -> None:
        """Write what is buffered: one Parquet row group, or lines/records."""
        if not self._pending:
            return
        import pyarrow as pa

        table = pa.concat_tables(self._pending).unify_dictionaries() if len(self._pending) > 1 else self._pending[0]
        self._pending, self.pending_rows, self.pending_bytes = [], 0, 0
        if self.fmt == "parquet":
            self._w.write_table(table, row_group_size=max(1, table.num_rows))
        else:  # row by row in Python: a slice at a time, so the row dicts stay few
            for start in range(0, table.num_rows, 8192):
                rows = _rows(table.slice(start, 8192))
                if self.fmt == "jsonl":
                    rows.append(None)
                    self._f.write("\n".join(_json(r) if r is not None else "" for r in rows).encode("utf-8"))
                    continue
                for r in rows:
                    self._w.append(_json({k: r[k] for k in ("_source", "_stream", "_epoch", "_offset") if k in r}),
                                   _json(r))

    def _close_file(self) -> None:
        from jobs.manifest import sync_file

        if self._w is not None:
            self._w.close()
        sync_file(self._f)
        self._f.close()
        self._f = self._w = self._schema = None

    def close(self) -> list[str]:
        """Finish every file; returns their staged names."""
        self.flush()
        if self._f is not None:
            self._close_file()
        return self.files

    def abort(self) -> None:
        try:
            if self._f is not None:
                self._f.close()
            for path in self.files:
                if self.fs.exists(path):
                    self.fs.rm(path)
        except OSError:
            pass


def _rows(table: Any) -> list[dict[str, Any]]:
    """Rows without null fields (as the per-record JSON output had them), provenance kept."""
    import pyarrow as pa

    # the provenance dictionary arrays as plain strings first: to_pylist of a dictionary array is ~23x slower
    plain = pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in table.schema])
    return [{k: v for k, v in r.items() if v is not None or k.startswith("_")} for r in table.cast(plain).to_pylist()]


class TableFiles:
    """A task's part files, one per partition; holds at most ``buffer_bytes`` of rows not yet written."""

    def __init__(self, fs: Any, root: str, stem: str, fmt: str, buffer_bytes: int) -> None:
        self.fs, self.root, self.stem, self.fmt = fs, root.rstrip("/"), stem, fmt
        self.buffer_bytes = buffer_bytes
        self._files: dict[tuple[str, ...], TableFile] = {}

    def add(self, partition: tuple[str, ...], table: Any) -> None:
        f = self._files.get(partition)
        if f is None:
            f = self._files[partition] = TableFile(self.fs, "/".join([self.root, *partition]), self.stem, self.fmt)
        f.add(table)
        if sum(x.pending_bytes for x in self._files.values()) > self.buffer_bytes:
            max(self._files.values(), key=lambda x: x.pending_bytes).flush()

    def close(self) -> list[str]:
        """Finish every file (durably); returns their staged names, to publish at commit."""
        return [p for _, f in sorted(self._files.items()) for p in f.close()]

    def abort(self) -> None:
        for f in self._files.values():
            f.abort()
