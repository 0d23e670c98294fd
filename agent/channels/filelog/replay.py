"""Rebuilding the channel's state on reopen: the checkpoint plus the log written after it.

A record that fails its checks in the newest segment, where no later record
vouches that it had been fsynced, is a write that never reached the disk (torn
by a crash, or lost with power after the last fsync): it is cut off, with
whatever follows it.  Anywhere else a bad record means damage to data that may
be committed, and replay stops with LogCorrupted naming the segment and offset
rather than skip it.

``logflume channel verify|salvage`` (``salvage.py``) replays in a second mode:
given a list to collect Damage in, replay records each damaged region, steps
over it to the next valid record and goes on, keeping whatever a damaged
region may have committed (at least once, never lost).
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
    HEADER,
    HEADER_SIZE,
    MAGIC,
    OP_COMMIT,
    OP_PUT,
    OP_ROLLBACK,
    OPS,
    BadRecord,
    LogCorrupted,
    decode_positions,
    find_valid_after,
    parse_at,
)
from agent.channels.filelog.segments import segment_name

log = logging.getLogger(__name__)


@dataclass
class Damage:
    """One damaged region of a channel directory, and what it costs."""

    #: The damaged file (a segment or the checkpoint).
    path: str
    offset: int
    #: Damaged bytes still present from ``offset`` (0 when they are gone: missing file, cut short).
    length: int
    #: What is wrong (checksum mismatch, segment missing, ...).
    reason: str
    #: What it means for the chunks the channel holds.
    impact: str


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
    #: Transactions with puts and no COMMIT or ROLLBACK record: txid -> their PUT entries.
    pending: dict[int, list[Entry]] = field(default_factory=dict)
    #: Chunks kept because a damaged region after their puts may have been their COMMIT.
    in_doubt: int = 0


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


def damaged_extent(buf, offset: int) -> tuple[int, tuple[int, int] | None]:
    """(end, (op, txid) or None) of the damaged region starting at ``offset``.

    When the header's lengths lead exactly to the next valid record (or the
    end of the segment), only the record's body is damaged and its op and
    txid can be believed.  Otherwise the region runs to the next valid
    record, and what it held is unknown.
    """
    size = len(buf)
    if offset + HEADER_SIZE <= size:
        magic, _crc, op, txid, meta_len, data_len, _synced = HEADER.unpack_from(buf, offset)
        end = offset + HEADER_SIZE + meta_len + data_len
        if magic == MAGIC and op in OPS and end <= size:
            try:
                if end < size:
                    parse_at(buf, end)
                return end, (op, txid)
            except BadRecord:
                pass
    nxt = find_valid_after(buf, offset)
    return (size if nxt is None else nxt), None


class _State:
    """Held chunks and open transactions while records are applied in log order."""

    def __init__(self, ckpt: Checkpoint) -> None:
        self.queue: OrderedDict[tuple[int, int], Entry] = OrderedDict(((e[0], e[1]), e) for e in ckpt.queue)
        self.pending: dict[int, list[Entry]] = {txid: list(es) for txid, es in ckpt.open_puts.items()}
        self.doubtful: dict[int, list[Entry]] = {}

    def commit(self, txid: int, takes: list[tuple[int, int]] | tuple[()] = ()) -> None:
        for pos in takes:
            self.queue.pop(pos, None)
        for e in self.pending.pop(txid, ()):
            self.queue[(e[0], e[1])] = e

    def rollback(self, txid: int) -> None:
        self.pending.pop(txid, None)
        for e in self.doubtful.pop(txid, ()):
            self.queue.pop((e[0], e[1]), None)

    def doubt_open_transactions(self) -> None:
        """A damaged region may have held the COMMIT of any open transaction: keep their puts (at least once)."""
        for txid in list(self.pending):
            entries = self.pending.pop(txid)
            self.doubtful.setdefault(txid, []).extend(entries)
            for e in entries:
                self.queue[(e[0], e[1])] = e

    def drop_segment(self, seg: int) -> int:
        lost = [k for k in self.queue if k[0] == seg]
        for k in lost:
            del self.queue[k]
        for txid in list(self.pending):
            self.pending[txid] = [e for e in self.pending[txid] if e[0] != seg]
        return len(lost)


def replay(directory: Path, ckpt: Checkpoint, segments: list[int],
           damage: list[Damage] | None = None) -> ReplayResult:
    """State after the checkpoint and every valid record after its position.

    Without ``damage`` (the channel's start) a torn tail is cut off the file
    and any other damage raises LogCorrupted.  With it (verify, salvage)
    nothing is written: damage is appended there and replay goes on past it.
    """
    state = _State(ckpt)
    present = set(segments)
    for seg in sorted(ckpt.referenced_segments() - present):
        reason = "segment missing but the checkpoint says it holds committed chunks"
        if damage is None:
            raise LogCorrupted(str(directory / segment_name(seg)), 0, reason)
        lost = state.drop_segment(seg)
        damage.append(Damage(str(directory / segment_name(seg)), 0, 0, reason, f"{lost} committed chunk(s) lost"))
    if ckpt.offset and ckpt.segment not in present:
        reason = "segment missing but the checkpoint position is inside it"
        if damage is None:
            raise LogCorrupted(str(directory / segment_name(ckpt.segment)), ckpt.offset, reason)
        damage.append(Damage(str(directory / segment_name(ckpt.segment)), ckpt.offset, 0, reason,
                             "records after the checkpoint in it are lost; open transactions kept"))
        state.doubt_open_transactions()
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
            reason = f"segment ends before the checkpoint position {start}"
            if damage is None:
                raise LogCorrupted(str(path), size, reason)
            damage.append(Damage(str(path), size, 0, reason, "records after the checkpoint in it are lost; "
                                 "open transactions kept"))
            state.doubt_open_transactions()
            continue
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
                        why = f"{exc}; not a torn tail: it is not the newest segment"
                    else:
                        voucher = durable_past(mm, off)
                        if voucher is None:
                            result.torn = (str(path), off, size - off, str(exc))
                            cut = off
                            break
                        why = (f"{exc}; not a torn tail: the record at offset {voucher[0]}, written later, says "
                               f"the segment was on disk up to offset {voucher[1]}")
                    if damage is None:
                        raise LogCorrupted(str(path), off, why) from None
                    off = _step_over(mm, off, str(path), why, state, damage)
                    continue
                result.records += 1
                max_txid = max(max_txid, rec.txid)
                if rec.op == OP_PUT:
                    state.pending.setdefault(rec.txid, []).append((seg, off, rec.meta_len, rec.data_len))
                elif rec.op == OP_COMMIT:
                    state.commit(rec.txid, takes)
                elif rec.op == OP_ROLLBACK:
                    state.rollback(rec.txid)
                off = rec.end
        if cut is not None and damage is None:
            log.warning("file channel: discarding torn tail of %s at offset %d (%d bytes, never committed: %s)",
                        path, cut, size - cut, result.torn[3] if result.torn else "")
            fd = os.open(path, os.O_WRONLY)
            try:
                os.ftruncate(fd, cut)
                os.fsync(fd)
            finally:
                os.close(fd)
    result.queue = list(state.queue.values())
    result.next_txid = max_txid + 1
    result.pending = state.pending
    result.discarded_puts = sum(len(es) for es in state.pending.values())
    result.in_doubt = sum(len(es) for es in state.doubtful.values())
    return result


def _step_over(buf, offset: int, path: str, reason: str, state: _State, damage: list[Damage]) -> int:
    """Record the damaged region at ``offset``, apply what it is known to have been; returns where to go on."""
    end, known = damaged_extent(buf, offset)
    if known is not None and known[0] == OP_PUT:
        impact = f"chunk put by transaction {known[1]} lost"
    elif known is not None and known[0] == OP_COMMIT:
        # The transaction committed; which chunks it consumed is unreadable, so they may come again.
        state.commit(known[1])
        impact = f"commit of transaction {known[1]}: its chunks kept, the chunks it consumed may be delivered again"
    elif known is not None:
        state.rollback(known[1])
        impact = f"rollback of transaction {known[1]}: nothing lost"
    else:
        state.doubt_open_transactions()
        impact = ("unknown records: chunks of transactions open here are kept (at least once), "
                  "chunks put here are lost")
    damage.append(Damage(path, offset, end - offset, reason, impact))
    return end
