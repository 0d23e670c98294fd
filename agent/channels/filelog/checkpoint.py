"""The checkpoint: a compact snapshot of the channel at one log position.

It lists, in commit order, where every chunk still held by the channel lives
(segment, offset, metadata and data lengths: no chunk bytes), plus the puts of
transactions open at that moment.  Reopening loads it and replays only the log
after its position; segments it no longer references can be deleted.

Layout (little-endian): ``"LFCP" | version u32 | next_txid u64 | segment u64 |
offset u64 | n_queue u64 | n_open u64 | n_queue entries | n_open times
(txid u64, n u64, n entries) | crc32 u32`` with entry = ``segment u64, offset
u64, meta_len u32, data_len u64``.  Written to a temporary file, fsynced and
renamed over the old one, so a crash leaves either the old or the new one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from agent.channels.filelog.records import LogCorrupted, crc32
from logflume.statefile import write_atomic

MAGIC = b"LFCP"
VERSION = 1
FILE_NAME = "checkpoint"
_HEAD = struct.Struct("<4sIQQQQQ")
ENTRY = struct.Struct("<QQIQ")
_TX = struct.Struct("<QQ")
_CRC = struct.Struct("<I")

#: (segment, offset, meta_len, data_len) of one PUT record.
Entry = tuple[int, int, int, int]


@dataclass
class Checkpoint:
    next_txid: int = 1
    segment: int = 1
    offset: int = 0
    queue: list[Entry] = field(default_factory=list)
    open_puts: dict[int, list[Entry]] = field(default_factory=dict)

    def referenced_segments(self) -> set[int]:
        segs = {e[0] for e in self.queue}
        for entries in self.open_puts.values():
            segs.update(e[0] for e in entries)
        return segs

    def encode(self) -> bytes:
        parts = [_HEAD.pack(MAGIC, VERSION, self.next_txid, self.segment, self.offset,
                            len(self.queue), len(self.open_puts))]
        parts.extend(ENTRY.pack(*e) for e in self.queue)
        for txid, entries in self.open_puts.items():
            parts.append(_TX.pack(txid, len(entries)))
            parts.extend(ENTRY.pack(*e) for e in entries)
        body = b"".join(parts)
        return body + _CRC.pack(crc32(body))

    @classmethod
    def decode(cls, raw: bytes, where: str, check_crc: bool = True) -> Checkpoint:
        """Parse a checkpoint; ``check_crc=False`` lets salvage read one whose checksum failed, to test it."""

        def bad(reason: str, at: int = 0) -> LogCorrupted:
            return LogCorrupted(where, at, reason)

        if len(raw) < _HEAD.size + _CRC.size:
            raise bad(f"checkpoint too short ({len(raw)} bytes)")
        (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
        if check_crc and crc32(memoryview(raw)[:-_CRC.size]) != crc:
            raise bad("checkpoint checksum mismatch")
        magic, version, next_txid, seg, off, n_queue, n_open = _HEAD.unpack_from(raw)
        if magic != MAGIC or version != VERSION:
            raise bad(f"not a version-{VERSION} checkpoint (magic {magic!r}, version {version})")
        try:
            pos = _HEAD.size
            queue = [ENTRY.unpack_from(raw, pos + i * ENTRY.size) for i in range(n_queue)]
            pos += n_queue * ENTRY.size
            open_puts: dict[int, list[Entry]] = {}
            for _ in range(n_open):
                txid, n = _TX.unpack_from(raw, pos)
                pos += _TX.size
                open_puts[txid] = [ENTRY.unpack_from(raw, pos + i * ENTRY.size) for i in range(n)]
                pos += n * ENTRY.size
        except struct.error as exc:
            raise bad(f"checkpoint truncated: {exc}", pos) from None
        if pos != len(raw) - _CRC.size:
            raise bad(f"checkpoint has {len(raw) - _CRC.size - pos} unexpected trailing bytes", pos)
        return cls(next_txid, seg, off, queue, open_puts)


def load(directory: Path) -> Checkpoint | None:
    """The checkpoint in ``directory``, None if there is none yet; raises LogCorrupted if damaged."""
    path = directory / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return Checkpoint.decode(raw, str(path))


def save(directory: Path, checkpoint: Checkpoint) -> None:
    """Replace the checkpoint atomically and durably."""
    write_atomic(directory / FILE_NAME, checkpoint.encode())
