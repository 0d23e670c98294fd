"""Chunks a job sets aside whole instead of stopping on them: bad metadata, and dedup conflicts.

A job never stops on a chunk.  A chunk whose metadata it cannot use (see
:func:`metadata_problem`) goes to an ``_errors`` partition; archive puts a chunk
whose bytes disagree with bytes already kept for the same range in
``_conflicts``.  Both are written in the sink-file format (Text key of
metadata JSON -> BytesWritable bytes), so nothing is lost and the chunks can be
read, fixed and archived again.  The key is the chunk's metadata (as stored,
when it could be parsed) plus what went wrong: ``error`` (a reason) or
``conflict`` (both sides' metadata).  Names starting with ``_`` are skipped by
every job, Hadoop and Spark, so set-aside chunks never flow on unnoticed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from jobs.hidden_temp import discard, hidden_temp
from jobs.layout import partition_name, utc_day_hour
from logflume.chunk import Buffer, Chunk

ERRORS_DIR = "_errors"
CONFLICTS_DIR = "_conflicts"
#: Bounds on the ``sender`` a collector records in the key (jobs log and report it).
MAX_SENDER_LEN = 1024
#: Stream offsets become Java longs and Parquet int64 columns (demux's ``_offset``).
MAX_SEQ_ID = 2**63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Rejected:
    """A stored record a job cannot use as a chunk, with why and where it was read."""

    meta: dict[str, Any] | None  # the key as parsed, or None when it is not a JSON object
    raw_key: Buffer
    data: Buffer
    reason: str
    where: str  # input file URL and the offset near the record

    def key(self) -> dict[str, Any]:
        """The set-aside record's key: the stored metadata plus ``error`` and ``input``."""
        base = dict(self.meta) if self.meta is not None else {
            "raw_key": bytes(self.raw_key).decode("utf-8", "backslashreplace")}
        return {**base, "error": self.reason, "input": self.where}


def metadata_problem(chunk: Chunk) -> str | None:
    """Why a job cannot partition, store or report ``chunk``, or None.

    The bounds every hop checks (:meth:`Chunk.metadata_error`), then what the
    jobs themselves do with the metadata: a UTC day and hour from the timestamp,
    a directory name from the datatype, UTF-8 text in every name (JSON allows
    lone surrogates, which cannot be written back), a bounded ``sender``, a
    ``seq_id`` that fits 64 bits.
    """
    reason = chunk.metadata_error()
    if reason is not None:
        return reason
    if chunk.seq_id >= MAX_SEQ_ID:
        return f"seq_id {chunk.seq_id} does not fit a signed 64-bit integer (Hadoop, Spark and Parquet readers)"
    sender = chunk.sender
    if len(sender) > MAX_SENDER_LEN or _CONTROL.search(sender):
        return f"sender must be at most {MAX_SENDER_LEN} characters without control characters"
    try:
        utc_day_hour(chunk.timestamp)
        partition_name(chunk.datatype)
        for text in (chunk.source, chunk.stream, chunk.datatype, chunk.epoch, sender, *chunk.flags,
                     *chunk.tags, *chunk.tags.values()):
            text.encode("utf-8")
    except UnicodeEncodeError:
        return "metadata holds text that is not valid Unicode (a lone surrogate)"
    except (ValueError, OverflowError, OSError) as exc:
        return f"timestamp {chunk.timestamp} cannot be a date partition: {exc}"
    return None


class SetAsideFile:
    """One sink-format SequenceFile of set-aside chunks: opened on first use, renamed into place on close.

    Its name and contents derive from the job's inputs only, so a job redone
    after a crash writes the same bytes.
    """

    def __init__(self, fs: Any, path: str, writer: str, metadata: dict[str, str] | None = None) -> None:
        self.fs = fs
        self.path = path
        self.tmp = hidden_temp(path)
        self.writer_name = writer
        self.metadata = metadata or {}
        self.count = 0
        self._f: Any = None
        self._w: Any = None

    def add(self, key: dict[str, Any], data: Buffer) -> None:
        """Append one record: ``key`` as JSON (ASCII-escaped, so any parsed text can be written back)."""
        if self._w is None:
            from logflume.sequencefile import BYTES_WRITABLE, TEXT, SequenceFileWriter

            self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
            self._f = self.fs.open(self.tmp, "wb")
            meta = {"logflume.writer": self.writer_name, "logflume.format": "1", **self.metadata}
            self._w = SequenceFileWriter(self._f, key_class=TEXT, value_class=BYTES_WRITABLE, metadata=meta,
                                         sync_marker=hashlib.md5(self.path.encode()).digest())
        self._w.append(json.dumps(key, separators=(",", ":"), sort_keys=True), data)
        self.count += 1

    def close(self) -> str | None:
        """Make the file durable and give it its final name; None when nothing was set aside."""
        if self._w is None:
            return None
        from jobs.manifest import sync_file

        self._w.close()
        sync_file(self._f)
        self._f.close()
        self.fs.mv(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drop a half-written file (its chunks are still in the inputs)."""
        discard(self.fs, self._f, self.tmp)
