"""SequenceFileWriter: Hadoop SequenceFile version 6, byte-compatible with Hadoop's writer.

Sync escapes follow Hadoop's rule (a marker before a record once the position is
``sync_interval`` past the previous one) so files stay splittable; BLOCK files
end a block once its serialized keys plus values reach ``block_size``.  On the
NONE hot path a value's bytes go to ``fileobj.write`` as given, never joined
with anything: a 64 MiB chunk costs one small write for the record header and
key, and one write of the caller's own buffer.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import IO, Any

from logflume.chunk import Chunk

from .codecs import Codec, codec_by_name
from .errors import SequenceFileError
from .writables import BYTES_WRITABLE, TEXT, Buffer, encode_vint, writable

VERSION = 6
MAGIC = b"SEQ"
#: Hadoop's SequenceFile.SYNC_INTERVAL (5 * 1024 * 20).
SYNC_INTERVAL = 102_400
#: Hadoop's io.seqfile.compress.blocksize default.
BLOCK_SIZE = 1_000_000
SYNC_ESCAPE = b"\xff\xff\xff\xff"
COMPRESSIONS = ("NONE", "RECORD", "BLOCK")

_INT = struct.Struct(">i")
_TWO_INTS = struct.Struct(">ii")
_INT_MAX = (1 << 31) - 1
#: Values smaller than this are joined with the record header into one write.
_SMALL_VALUE = 4096


def _text(s: str | bytes) -> bytes:
    raw = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return encode_vint(len(raw)) + raw


def _stable(buf: Buffer) -> Buffer:
    """A buffer the caller cannot change under us while it waits in a block."""
    if isinstance(buf, bytes) or (isinstance(buf, memoryview) and buf.readonly):
        return buf
    return bytes(buf)


class SequenceFileWriter:
    """Writes one SequenceFile to a binary file-like object.

    ``fileobj`` needs only ``write`` (``flush``/``close`` are used when
    present); positions are counted here from the first byte we write.
    """

    def __init__(
        self,
        fileobj: IO[bytes] | Any,
        key_class: str = TEXT,
        value_class: str = BYTES_WRITABLE,
        compression: str = "NONE",
        codec: str | None = None,
        metadata: Mapping[str, str] | None = None,
        sync_interval: int = SYNC_INTERVAL,
        block_size: int = BLOCK_SIZE,
        sync_marker: bytes | None = None,
        close_file: bool = False,
    ) -> None:
        compression = compression.upper()
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
        if compression == "NONE":
            if codec is not None:
                raise ValueError("a codec needs compression RECORD or BLOCK")
            self._codec: Codec | None = None
        else:
            self._codec = codec_by_name(codec or "deflate")
        if sync_marker is None:
            sync_marker = os.urandom(16)
        if len(sync_marker) != 16:
            raise ValueError("sync_marker must be 16 bytes")
        if sync_interval <= 0 or block_size <= 0:
            raise ValueError("sync_interval and block_size must be positive")
        self._f = fileobj
        self._key = writable(key_class)
        self._value = writable(value_class)
        self.key_class = key_class
        self.value_class = value_class
        self.compression = compression
        self.sync_marker = bytes(sync_marker)
        self.sync_interval = sync_interval
        self.block_size = block_size
        self.metadata = dict(metadata or {})
        self._close_file = close_file
        self._closed = False
        self._pos = 0
        self._last_sync = 0
        self._escape = SYNC_ESCAPE + self.sync_marker
        self._reset_block()
        self._write(self._header())

    # -- header -----------------------------------------------------------

    def _header(self) -> bytes:
        parts = [MAGIC, bytes([VERSION]), _text(self.key_class), _text(self.value_class)]
        parts.append(
            b"\x00\x00"
            if self._codec is None
            else b"\x01\x01"
            if self.compression == "BLOCK"
            else b"\x01\x00"
        )
        if self._codec is not None:
            parts.append(_text(self._codec.class_name))
        items = []
        for k, v in self.metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata keys and values must be str")
            items.append((k.encode("utf-8"), v.encode("utf-8")))
        items.sort()  # Hadoop's TreeMap<Text>: unsigned byte order
        parts.append(_INT.pack(len(items)))
        for k, v in items:
            parts.append(encode_vint(len(k)) + k)
            parts.append(encode_vint(len(v)) + v)
        parts.append(self.sync_marker)
        return b"".join(parts)

    # -- public API -------------------------------------------------------

    @property
    def position(self) -> int:
        """Bytes written so far: the file size once everything is flushed."""
        return self._pos

    def append(self, key: Any, value: Any) -> None:
        """Append one record; key and value as Python values of their Writable classes."""
        self._append_payloads(self._key.to_payload(key), self._value.to_payload(value))

    def append_chunk(self, chunk: Chunk) -> None:
        """Append a sink-file record: Text(chunk metadata JSON) -> BytesWritable(chunk bytes)."""
        if self.key_class != TEXT or self.value_class != BYTES_WRITABLE:
            raise ValueError("append_chunk needs key class Text and value class BytesWritable")
        self._append_payloads(chunk.metadata_json(), chunk.data)

    def sync(self) -> None:
        """Make the next record start a new split point (Hadoop's ``Writer.sync()``)."""
        self._check_open()
        if self.compression == "BLOCK":
            self._write_block()
        elif self._pos != self._last_sync:
            self._write_sync()

    def flush(self) -> None:
        """Write any pending block, then flush ``fileobj``; readers then see whole records."""
        self._check_open()
        if self.compression == "BLOCK":
            self._write_block()
        flush = getattr(self._f, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Write the last block and flush; closes ``fileobj`` only if ``close_file`` was set."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._close_file:
            self._f.close()

    def __enter__(self) -> SequenceFileWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("SequenceFileWriter is closed")

    def _write(self, data: Buffer) -> None:
        self._f.write(data)
        self._pos += len(data)

    def _write_sync(self) -> None:
        self._write(self._escape)
        self._last_sync = self._pos

    def _append_payloads(self, kp: Buffer, vp: Buffer) -> None:
        self._check_open()
        kprefix = self._key.prefix(len(kp))
        vprefix = self._value.prefix(len(vp))
        klen = len(kprefix) + len(kp)
        if self.compression == "BLOCK":
            self._buffer_record(kprefix, kp, klen, vprefix, vp)
            return
        if self.compression == "RECORD":
            assert self._codec is not None
            vpieces = self._codec.compress([vprefix, vp])
        else:
            vpieces = [vprefix, vp]
        vlen = sum(len(p) for p in vpieces)
        if klen + vlen > _INT_MAX:
            raise SequenceFileError(self._pos, f"record of {klen + vlen} bytes exceeds the 2 GiB limit")
        if self._pos >= self._last_sync + self.sync_interval:
            self._write_sync()
        head = _TWO_INTS.pack(klen + vlen, klen) + kprefix + kp
        if len(vpieces) == 2 and len(vpieces[1]) < _SMALL_VALUE:
            self._write(head + vpieces[0] + vpieces[1])
            return
        self._write(head)
        for piece in vpieces:
            if len(piece):
                self._write(piece)

    def _reset_block(self) -> None:
        self._key_lens: list[bytes] = []
        self._keys: list[Buffer] = []
        self._value_lens: list[bytes] = []
        self._values: list[Buffer] = []
        self._block_bytes = 0

    def _buffer_record(self, kprefix: bytes, kp: Buffer, klen: int, vprefix: bytes, vp: Buffer) -> None:
        vlen = len(vprefix) + len(vp)
        if klen > _INT_MAX or vlen > _INT_MAX:
            raise SequenceFileError(self._pos, "key or value exceeds the 2 GiB limit")
        self._key_lens.append(encode_vint(klen))
        self._keys.append(kprefix)
        self._keys.append(_stable(kp))
        self._value_lens.append(encode_vint(vlen))
        self._values.append(vprefix)
        self._values.append(_stable(vp))
        self._block_bytes += klen + vlen
        if self._block_bytes >= self.block_size:
            self._write_block()

    def _write_block(self) -> None:
        if not self._key_lens:
            return
        assert self._codec is not None
        parts: list[Buffer] = [self._escape, encode_vint(len(self._key_lens))]
        for pieces in (self._key_lens, self._keys, self._value_lens, self._values):
            comp = self._codec.compress(pieces)
            size = sum(len(c) for c in comp)
            if size > _INT_MAX:
                raise SequenceFileError(self._pos, f"compressed block buffer of {size} bytes exceeds 2 GiB")
            parts.append(encode_vint(size))
            parts.extend(comp)
        self._reset_block()
        for part in parts:
            self._write(part)
