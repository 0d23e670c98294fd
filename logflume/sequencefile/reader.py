"""SequenceFileReader: reads Hadoop SequenceFiles (versions 4-6), whole or as a split.

It trusts nothing it reads: every length is checked against the bytes left in
the file before anything is allocated, compressed units may not inflate past a
bound, and each sync escape's marker is compared with the header's.  Every
whole record before a problem is yielded first; then the problem is raised as
:class:`TruncatedFileError` (the file ends inside an entry: a torn write) or
:class:`CorruptFileError` (the bytes contradict the format), with its offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from logflume.chunk import Chunk

from .codecs import Codec, CodecError, codec_by_class
from .errors import CorruptFileError, SequenceFileError, TruncatedFileError
from .writables import Writable, decode_vint, vint_size, writable

_INT = struct.Struct(">i")
_MAGIC = b"SEQ"
_MIN_VERSION = 4
_MAX_VERSION = 6
_MARKER = 16
#: Largest inflation of a compressed unit we accept, per compressed byte
#: (zlib's theoretical maximum is about 1032:1).
_MAX_RATIO = 1100
#: Default ceiling for one decompressed unit (a RECORD value or a BLOCK buffer): the largest
#: chunk logflume moves (the file channel's max_chunk_size, 256 MiB) plus a BLOCK's default
#: 1 MB of other records and headroom.  A hostile 1.5 MiB record claiming to inflate to
#: gigabytes stops here; readers of bigger foreign values pass ``max_unit_size``.
MAX_UNIT = 260 << 20
_SCAN_WINDOW = 1 << 20


@dataclass(frozen=True, slots=True)
class SequenceFileHeader:
    version: int
    key_class: str
    value_class: str
    compression: str  # NONE, RECORD or BLOCK
    codec: str | None  # codec class name, None for NONE
    metadata: dict[str, str] = field(default_factory=dict)
    sync_marker: bytes = b""
    header_length: int = 0


class _Short(Exception):
    """Raised by _Input when the file ends before the bytes asked for."""


class _Input:
    """Sequential reads that know the file size, so lengths can be checked first."""

    def __init__(self, f: Any, size: int, pos: int) -> None:
        self.f = f
        self.size = size
        self.pos = pos
        f.seek(pos)

    def seek(self, pos: int) -> None:
        self.f.seek(pos)
        self.pos = pos

    def remaining(self) -> int:
        return self.size - self.pos

    def read(self, n: int) -> bytes:
        if n > self.size - self.pos:
            raise _Short
        data = self.f.read(n)
        while len(data) < n:  # short reads from raw or remote files
            more = self.f.read(n - len(data))
            if not more:
                raise _Short
            data += more
        self.pos += n
        return data

    def read_int(self) -> int:
        return _INT.unpack(self.read(4))[0]

    def read_vint(self) -> int:
        first = self.read(1)
        size = vint_size(first[0])
        raw = first if size == 1 else first + self.read(size - 1)
        return decode_vint(raw, 0)[0]

    def read_text(self, what: str) -> str:
        at = self.pos
        n = self.read_vint()
        if n < 0 or n > self.remaining():
            if n < 0:
                raise CorruptFileError(at, f"{what} has negative length {n}")
            raise _Short
        return self.read(n).decode("utf-8", "replace")


class SequenceFileReader:
    """Iterate the records of a SequenceFile, or of one byte-range split of it.

    With ``start > 0`` the reader skips to the first sync marker at or after
    ``start``; it stops after ``end`` once it has just passed a sync marker,
    exactly as Hadoop's ``SequenceFileRecordReader`` does, so N adjacent splits
    yield every record exactly once.  ``raw=True`` makes Text decode to bytes.
    """

    def __init__(
        self,
        fileobj: IO[bytes] | Any,
        start: int = 0,
        end: int | None = None,
        raw: bool = False,
        max_unit_size: int = MAX_UNIT,
    ) -> None:
        self._f = fileobj
        fileobj.seek(0, 2)
        self._size = fileobj.tell()
        self._raw = raw
        self._max_unit = max_unit_size
        self._in = _Input(fileobj, self._size, 0)
        self.header = self._read_header()
        self._key: Writable = self._writable(self.header.key_class, "key")
        self._value: Writable = self._writable(self.header.value_class, "value")
        self._codec: Codec | None = None
        if self.header.codec is not None:
            try:
                self._codec = codec_by_class(self.header.codec)
            except ValueError as exc:
                raise SequenceFileError(None, str(exc)) from None
        self._end = self._size if end is None else min(end, self._size)
        self._start = self.header.header_length
        if start > self._start:
            self._start = self._find_sync(start)
        #: File offset just after the last whole record (or block) returned.
        self.last_record_end = self._start
        self._used = False
        self._record_offset = self._start

    # -- header -----------------------------------------------------------

    def _writable(self, name: str, role: str) -> Writable:
        try:
            return writable(name)
        except ValueError as exc:
            raise SequenceFileError(None, f"{role} class: {exc}") from None

    def _read_header(self) -> SequenceFileHeader:
        inp = self._in
        try:
            magic = inp.read(3)
            if magic != _MAGIC:
                raise CorruptFileError(0, f"not a SequenceFile (magic {magic!r}, expected b'SEQ')")
            version = inp.read(1)[0]
            if not _MIN_VERSION <= version <= _MAX_VERSION:
                raise CorruptFileError(
                    3, f"unsupported SequenceFile version {version} (this reader handles 4 to 6)"
                )
            key_class = inp.read_text("key class")
            value_class = inp.read_text("value class")
            compressed, block = (b != 0 for b in inp.read(2))
            if block and not compressed:
                raise CorruptFileError(inp.pos - 1, "block-compressed flag set without compressed flag")
            codec = None
            if compressed:
                codec = (
                    inp.read_text("codec class")
                    if version >= 5
                    else "org.apache.hadoop.io.compress.DefaultCodec"
                )
            metadata: dict[str, str] = {}
            if version >= 6:
                at = inp.pos
                count = inp.read_int()
                if count < 0:
                    raise CorruptFileError(at, f"negative metadata count {count}")
                if count * 2 > inp.remaining():
                    raise _Short  # each pair takes at least two bytes
                for _ in range(count):
                    k = inp.read_text("metadata key")
                    metadata[k] = inp.read_text("metadata value")
            marker = inp.read(_MARKER)
        except _Short:
            raise TruncatedFileError(inp.pos, "file ends inside the header") from None
        except ValueError as exc:  # a VInt that does not fit in an int
            raise CorruptFileError(inp.pos, f"bad header: {exc}") from None
        return SequenceFileHeader(
            version=version,
            key_class=key_class,
            value_class=value_class,
            compression="BLOCK" if block else "RECORD" if compressed else "NONE",
            codec=codec,
            metadata=metadata,
            sync_marker=marker,
            header_length=inp.pos,
        )

    def _find_sync(self, start: int) -> int:
        """Offset of the sync escape whose marker is the first at or after ``start + 4``."""
        marker = self.header.sync_marker
        pos = start + 4
        if start + 4 + _MARKER >= self._size:
            return self._size
        self._f.seek(pos)
        carry = b""
        while pos < self._size:
            window = self._f.read(min(_SCAN_WINDOW, self._size - pos))
            if not window:
                break
            buf = carry + window
            hit = buf.find(marker)
            if hit >= 0:
                return pos - len(carry) + hit - 4
            carry = buf[-(_MARKER - 1) :]
            pos += len(window)
        return self._size

    # -- iteration --------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        kconv, vconv, raw = self._key.from_payload, self._value.from_payload, self._raw
        for k, v in self.iter_raw():
            yield kconv(k, raw), vconv(v, raw)

    def iter_raw(self) -> Iterator[tuple[memoryview, memoryview]]:
        """(key payload, value payload) without length prefixes: Text/BytesWritable bytes."""
        ksplit, vsplit = self._key.split, self._value.split
        for at, kser, vser in self._entries():
            self._record_offset = at
            try:
                kp = ksplit(kser)
            except ValueError as exc:
                raise CorruptFileError(at, f"bad key: {exc}") from None
            try:
                vp = vsplit(vser)
            except ValueError as exc:
                raise CorruptFileError(at, f"bad value: {exc}") from None
            yield kp, vp

    def iter_chunks(self) -> Iterator[Chunk]:
        """Chunks of a sink file (Text metadata JSON -> BytesWritable chunk bytes)."""
        for k, v in self.iter_raw():
            try:
                yield Chunk.from_metadata_json(k, v)
            except ValueError as exc:
                raise SequenceFileError(self._record_offset, f"record is not a chunk: {exc}") from None

    def _entries(self) -> Iterator[tuple[int, memoryview, memoryview]]:
        """(record offset, serialized key, serialized value), value already decompressed."""
        if self._used:
            raise ValueError("a SequenceFileReader can be iterated once")
        self._used = True
        if self._start >= self._end:
            return
        self._in.seek(self._start)
        if self.header.compression == "BLOCK":
            yield from self._blocks()
        else:
            yield from self._records()

    def _check_marker(self, at: int) -> None:
        marker = self._in.read(_MARKER)
        if marker != self.header.sync_marker:
            raise CorruptFileError(at + 4, f"sync marker {marker.hex()} differs from the header's")

    def _records(self) -> Iterator[tuple[int, memoryview, memoryview]]:
        inp, end, codec = self._in, self._end, self._codec
        while inp.pos < self._size:
            at = inp.pos
            try:
                length = inp.read_int()
                synced = length == -1
                if synced:
                    self._check_marker(at)
                    if at >= end:
                        return
                    # A marker always precedes a record; Hadoop fails on one at the end,
                    # so a file ending here is torn and must be cut before the marker.
                    length = inp.read_int()
                rec = inp.pos - 4
                if length < 0:
                    raise CorruptFileError(rec, f"negative record length {length}")
                key_len = inp.read_int()
                if not 0 <= key_len <= length:
                    raise CorruptFileError(rec + 4, f"key length {key_len} outside record length {length}")
                if length > inp.remaining():
                    raise TruncatedFileError(
                        at, f"record of {length} bytes runs past the end of the file ({self._size} bytes)"
                    )
                body = memoryview(inp.read(length))
            except _Short:
                raise TruncatedFileError(at, "file ends inside a record") from None
            value = body[key_len:]
            if codec is not None:
                value = memoryview(self._inflate(codec, value, rec + 8 + key_len))
            self.last_record_end = inp.pos
            yield rec, body[:key_len], value

    def _inflate(self, codec: Codec, data: memoryview, at: int) -> bytes:
        limit = min(self._max_unit, len(data) * _MAX_RATIO + 1024)
        try:
            return codec.decompress(data, limit)
        except CodecError as exc:
            raise CorruptFileError(at, str(exc)) from None

    def _blocks(self) -> Iterator[tuple[int, memoryview, memoryview]]:
        inp, end, codec = self._in, self._end, self._codec
        assert codec is not None
        while inp.pos < self._size:
            at = inp.pos
            if at >= end:
                return
            try:
                inp.read_int()  # Hadoop does not check the escape's value either
                self._check_marker(at)
                n_at = inp.pos
                count = inp.read_vint()
                if count < 0:
                    raise CorruptFileError(n_at, f"impossible record count {count} in block")
                buffers = []
                for _ in range(4):
                    size_at = inp.pos
                    size = inp.read_vint()
                    if size < 0:
                        raise CorruptFileError(size_at, f"negative block buffer size {size}")
                    if size > inp.remaining():
                        raise TruncatedFileError(
                            at, f"block buffer of {size} bytes runs past the end of the file"
                        )
                    buffers.append((inp.pos, memoryview(inp.read(size))))
            except _Short:
                raise TruncatedFileError(at, "file ends inside a block") from None
            except ValueError as exc:
                raise CorruptFileError(inp.pos, f"bad block: {exc}") from None
            block_end = inp.pos
            key_lens = self._lengths(codec, buffers[0], count)
            keys = memoryview(self._inflate(codec, buffers[1][1], buffers[1][0]))
            value_lens = self._lengths(codec, buffers[2], count)
            values = memoryview(self._inflate(codec, buffers[3][1], buffers[3][0]))
            if sum(key_lens) != len(keys):
                raise CorruptFileError(buffers[1][0], "key lengths do not add up to the keys buffer")
            if sum(value_lens) != len(values):
                raise CorruptFileError(buffers[3][0], "value lengths do not add up to the values buffer")
            self.last_record_end = block_end
            kpos = vpos = 0
            for klen, vlen in zip(key_lens, value_lens, strict=True):
                yield at, keys[kpos : kpos + klen], values[vpos : vpos + vlen]
                kpos += klen
                vpos += vlen

    def _lengths(self, codec: Codec, buffer: tuple[int, memoryview], count: int) -> list[int]:
        at, data = buffer
        raw = self._inflate(codec, data, at)
        out = []
        pos = 0
        try:
            for _ in range(count):
                n, pos = decode_vint(raw, pos)
                if n < 0:
                    raise ValueError(f"negative length {n}")
                out.append(n)
        except (IndexError, ValueError) as exc:
            raise CorruptFileError(at, f"bad length in block: {exc or 'buffer too short'}") from None
        if pos != len(raw):
            raise CorruptFileError(at, f"{len(raw) - pos} stray bytes after {count} lengths in block")
        return out
