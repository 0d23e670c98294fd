"""The demux output path before batch processors (a ``process()`` and a JSON encode per record, JSON Lines),
kept for ``bench/bench_jobs.py``'s "before" row: the jobs no longer write this way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobs.hidden_temp import discard, hidden_temp
from logflume.processor import encode_json


class PartitionWriter:
    """One partition's JSON Lines part file, written a record at a time, renamed into place when closed."""

    def __init__(self, fs: Any, root: str, partition: tuple[str, ...], part: int) -> None:
        self.fs = fs
        folder = "/".join([root.rstrip("/"), *partition])
        self.path = f"{folder}/part-{part:05d}.jsonl"
        self.tmp = hidden_temp(self.path)
        fs.makedirs(folder, exist_ok=True)
        self._lines: list[str] = []
        self._f: Any = fs.open(self.tmp, "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._lines.append(encode_json(record))
        if len(self._lines) >= 512:
            self._flush_lines()

    def _flush_lines(self) -> None:
        self._lines.append("")
        self._f.write("\n".join(self._lines))
        self._lines.clear()

    def close(self) -> str:
        if self._lines:
            self._flush_lines()
        self._f.close()
        self.fs.mv(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        discard(self.fs, self._f, self.tmp)


def write_partitions(records: Iterable[tuple[tuple[str, ...], Any]], fs: Any, root: str, index: int) -> list[str]:
    """Write (partition, record) pairs into one JSON Lines part file per partition; all or nothing."""
    writers: dict[tuple[str, ...], PartitionWriter] = {}
    try:
        for part, record in records:
            w = writers.get(part)
            if w is None:
                w = writers[part] = PartitionWriter(fs, root, part, index)
            w.write(record)
        return [w.close() for _, w in sorted(writers.items())]
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
