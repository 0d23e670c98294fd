"""Rebuilding the channel's state on reopen: the checkpoint plus the log written after it.

A record that fails its checks in the newest segment, where no later record
vouches that it had been fsynced, is a write that never reached the disk (torn
by a crash, or lost with power after the last fsync): it is cut off, with
whatever follows it.  Anywhere else a bad record means damage to data that may
be committed, and replay stops with LogCorrupted naming the segment and offset
rather than skip it.
"""

from __future__ import annotations

import logging
import mmap
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from agent.channels.filelog.checkpoint import Checkpoint, Entry
from agent.channels.filelog.records import (
    OP_COMMIT,
    OP_PUT,
    OP_ROLLBACK,
    BadRecord,
    LogCorrupted,
    decode_positions,
    find_valid_after,
    parse_at,
)
from agent.channels.filelog.segments import segment_name

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    #: Committed chunks not yet consumed, in commit order.
    queue: list[Entry]
    next_txid: int
    records: int = 0
    #: (segment path, offset, bytes cut, reason) of a discarded torn tail.
    torn: tuple[str, int, int, str] | None = None
    #: Chunks of transactions that never committed (discarded).
    discarded_puts: int = 0
    segments: list[int] = field(default_factory=list)


def durable_past(buf, offset: int) -> tuple[int, int] | None:
    """(offset, synced) of a valid record after ``offset`` that says ``offset`` was already fsynced, if any.

    A bad record that no later record vouches for was never known to be on
    disk: a write torn by a crash, or pages lost with power after the last
    fsync.  Nothing acknowledged lies there (with ``fsync: every_commit``), so
    it may be cut off with whatever follows it.  A bad record that a later one
    vouches for is damage to durable data.
    """
    pos = find_valid_after(buf, offset)
    while pos is not None:
        rec = parse_at(buf, pos)
        if rec.synced > offset:
            return rec.offset, rec.synced
        try:
            parse_at(buf, rec.end)
            pos = rec.end
        except BadRecord:
            pos = find_valid_after(buf, rec.end)
    return None


def replay(directory: Path, ckpt: Checkpoint, segments: list[int]) -> ReplayResult:
    """State after the checkpoint and every valid record after its position; cuts a torn tail off."""
    queue: OrderedDict[tuple[int, int], Entry] = OrderedDict(((e[0], e[1]), e) for e in ckpt.queue)
    pending: dict[int, list[Entry]] = {txid: list(es) for txid, es in ckpt.open_puts.items()}
    present = set(segments)
    for seg in ckpt.referenced_segments():
        if seg not in present:
            raise LogCorrupted(str(directory / segment_name(seg)), 0,
                               "segment missing but the checkpoint says it holds committed chunks")
    if ckpt.offset and ckpt.segment not in present:
        raise LogCorrupted(str(directory / segment_name(ckpt.segment)), ckpt.offset,
                           "segment missing but the checkpoint position is inside it")
    max_txid = ckpt.next_txid - 1
    result = ReplayResult([], 0, segments=list(segments))
    tail = [s for s in segments if s >= ckpt.segment]
    # The newest segment that has records: a torn write can only be at its end.
    sizes = {s: os.path.getsize(directory / segment_name(s)) for s in tail}
    newest = max((s for s in tail if sizes[s] > 0), default=None)
    for seg in tail:
        path = directory / segment_name(seg)
        start = ckpt.offset if seg == ckpt.segment else 0
        size = sizes[seg]
        if size < start:
            raise LogCorrupted(str(path), size, f"segment ends before the checkpoint position {start}")
        if size == start:
            continue
        cut: int | None = None
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            off = start
            while off < size:
                try:
                    rec = parse_at(mm, off)
                    takes = decode_positions(rec.body) if rec.op == OP_COMMIT else ()
                except BadRecord as exc:
                    if seg != newest:
                        raise LogCorrupted(str(path), off, f"{exc}; not a torn tail: it is not the newest "
                                           "segment") from None
                    voucher = durable_past(mm, off)
                    if voucher is not None:
                        raise LogCorrupted(str(path), off, f"{exc}; not a torn tail: the record at offset "
                                           f"{voucher[0]}, written later, says the segment was on disk up to "
                                           f"offset {voucher[1]}") from None
                    result.torn = (str(path), off, size - off, str(exc))
                    cut = off
                    break
                result.records += 1
                max_txid = max(max_txid, rec.txid)
                if rec.op == OP_PUT:
                    pending.setdefault(rec.txid, []).append((seg, off, rec.meta_len, rec.data_len))
                elif rec.op == OP_COMMIT:
                    for pos in takes:
                        queue.pop(pos, None)
                    for e in pending.pop(rec.txid, ()):
                        queue[(e[0], e[1])] = e
                elif rec.op == OP_ROLLBACK:
                    pending.pop(rec.txid, None)
                off = rec.end
        if cut is not None:
            log.warning("file channel: discarding torn tail of %s at offset %d (%d bytes, never committed: %s)",
                        path, cut, size - cut, result.torn[3] if result.torn else "")
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, cut)
                os.fsync(fd)
            finally:
                os.close(fd)
    result.queue = list(queue.values())
    result.next_txid = max_txid + 1
    result.discarded_puts = sum(len(es) for es in pending.values())
    return result
