"""Finding finished sink (and archive) files under an fsspec URL.

A file being written has a hidden name (``sinks.naming``: a part starting
with ``_`` or ``.``, as Hadoop and Spark skip) and gets its final name only
once closed, so a job takes exactly the ``*.seq`` files whose path below the
root is not hidden (``sinks.naming.is_hidden``, which demux and hicc use from
here).  That also skips archive's own ``_manifest``, ``_errors``,
``_conflicts`` and temporaries.

Every record read is either a usable chunk or a :class:`~jobs.setaside.Rejected`
naming why not: no record can stop a job.  A file that is not a SequenceFile,
or is damaged, still stops it (that is damage to the store, not a chunk).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jobs.errors import JobError
from jobs.setaside import Rejected, metadata_problem
from logflume.chunk import Buffer, Chunk
from sinks.naming import is_hidden
from sinks.storage import open_filesystem

__all__ = ["InputFile", "hadoop_url", "is_hidden", "list_finished", "open_fs", "parse_record", "read_chunks"]


@dataclass(frozen=True, slots=True)
class InputFile:
    path: str  # as the filesystem names it (no protocol)
    size: int
    rel: str  # relative to the root, '/'-separated: how manifests name it


def open_fs(url: str) -> tuple[Any, str]:
    """(filesystem, root path) for a URL or a local path; an SFTP server must prove its host key."""
    fs, root = open_filesystem(url, {})
    return fs, root.rstrip("/") or "/"


def list_finished(fs: Any, root: str, suffix: str = ".seq") -> list[InputFile]:
    """Every finished file under ``root`` (or ``root`` itself if it is a file), sorted by path."""
    if fs.isfile(root):
        return [InputFile(root, fs.size(root), root.rsplit("/", 1)[-1])]
    if not fs.exists(root):
        raise FileNotFoundError(f"input {root!r} does not exist")
    out = []
    for path, info in fs.find(root, detail=True).items():
        rel = path[len(root):].lstrip("/")
        if info.get("type") == "file" and rel.endswith(suffix) and not is_hidden(rel):
            out.append(InputFile(path, int(info.get("size") or 0), rel))
    return sorted(out, key=lambda f: f.rel)


def hadoop_url(fs: Any, path: str) -> str:
    """The URL Hadoop (Spark) uses for a path fsspec names: file://, hdfs://, s3a://, ..."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return "file://" + path
    if protocol in ("s3", "s3a"):
        return "s3a://" + path
    return fs.unstrip_protocol(path)


def parse_record(key: Buffer, value: Buffer, where: str) -> Chunk | Rejected:
    """A stored record as a chunk a job can use, or the reason it cannot be one.

    The key is hostile input as far as a job knows: any failure to decode it
    (not JSON, too deeply nested, a number out of range, a missing field) or
    metadata outside the bounds (:func:`~jobs.setaside.metadata_problem`) gives
    a :class:`Rejected` that keeps the record whole.
    """
    meta: Any = None
    try:
        meta = json.loads(bytes(key))
        if not isinstance(meta, dict):
            return Rejected(None, key, value, "chunk metadata is not a JSON object", where)
        chunk = Chunk.from_metadata(meta, value)
    except (ValueError, TypeError, OverflowError, RecursionError, AttributeError) as exc:
        meta = meta if isinstance(meta, dict) else None
        reason = str(exc) if isinstance(exc, ValueError) else f"malformed chunk metadata: {exc!r}"
        return Rejected(meta, key, value, reason, where)
    reason = metadata_problem(chunk)
    if reason is not None:
        return Rejected(meta, key, value, reason, where)
    return chunk


def read_chunks(fs: Any, path: str, start: int = 0, end: int | None = None) -> Iterator[Chunk | Rejected]:
    """Chunks (or rejected records) of one sink/archive file split; a damaged file raises JobError naming it."""
    from logflume.sequencefile import SequenceFileError, SequenceFileReader

    url = fs.unstrip_protocol(path)
    with fs.open(path, "rb") as f:
        try:
            reader = SequenceFileReader(f, start=start, end=end)
            for key, value in reader.iter_raw():
                yield parse_record(key, value, f"{url}@{reader.last_record_end}")
        except SequenceFileError as exc:
            raise JobError(f"{path}: {exc}") from None
