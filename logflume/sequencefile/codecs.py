"""Compression codecs, named by the Hadoop class that reads them.

* ``deflate`` — ``DefaultCodec``: one zlib stream (RFC 1950) per unit.
* ``gzip`` — ``GzipCodec``: one gzip member (RFC 1952) per unit.
* ``lz4`` — ``Lz4Codec`` and ``snappy`` — ``SnappyCodec``: raw LZ4 blocks /
  raw Snappy, wrapped in Hadoop's ``BlockCompressorStream`` framing: a 4-byte
  big-endian uncompressed length, then one or more (4-byte compressed length,
  compressed segment) pairs whose uncompressed sizes add up to it.  Hadoop's
  decompressors hold one segment in a 256 KiB buffer, so we cut segments at the
  same ``MAX_INPUT_SIZE`` Hadoop's own compressor uses.

A "unit" is one RECORD value or one of the four BLOCK buffers.  ``compress``
takes the unit as a list of pieces (so callers never join large payloads just
to hand them over) and returns pieces to write.  ``decompress`` refuses to
produce more than ``limit`` bytes, so a hostile length cannot make us allocate
gigabytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import cramjam
import lz4.block

Buffer = bytes | bytearray | memoryview

_INT = struct.Struct(">i")

# Hadoop's io.compression.codec.{lz4,snappy}.buffersize default (256 KiB).
HADOOP_BLOCK_BUFFER = 256 * 1024


#: Bytes inflated per step: bounds the transient memory above the output itself.
_INFLATE_STEP = 16 << 20

class CodecError(ValueError):
    """A compressed unit that does not decode; the reader adds the file offset."""


class Codec:
    """One codec: its Hadoop class name and unit-level compress/decompress."""

    name: str = ""
    class_name: str = ""

    def compress(self, pieces: Sequence[Buffer]) -> list[Buffer]:
        raise NotImplementedError

    def decompress(self, data: memoryview, limit: int) -> bytes:
        raise NotImplementedError


class DefaultCodec(Codec):
    """zlib, exactly what Hadoop's built-in (Java) deflater writes."""

    name = "deflate"
    class_name = "org.apache.hadoop.io.compress.DefaultCodec"
    wbits = zlib.MAX_WBITS
    allow_concatenation = False

    def __init__(self, level: int = 6) -> None:
        self.level = level

    def compress(self, pieces: Sequence[Buffer]) -> list[Buffer]:
        c = zlib.compressobj(self.level, zlib.DEFLATED, self.wbits)
        out: list[Buffer] = [c.compress(p) for p in pieces]
        out.append(c.flush())
        return [o for o in out if o]

    def decompress(self, data: memoryview, limit: int) -> bytes | bytearray:
        # Inflate in steps into one growing buffer: a stream claiming gigabytes stops at ``limit``
        # having held about ``limit`` bytes, not twice that (zlib's own output joins its blocks).
        out = bytearray()
        rest: Buffer = data
        while True:
            d = zlib.decompressobj(self.wbits)
            pending: Buffer = rest
            try:
                while True:
                    part = d.decompress(pending, min(_INFLATE_STEP, limit - len(out) + 1))
                    out += part
                    if len(out) > limit:
                        raise CodecError(f"{self.name} stream inflates beyond {limit} bytes")
                    pending = d.unconsumed_tail
                    if d.eof or not part:
                        break
            except zlib.error as exc:
                raise CodecError(f"{self.name} stream does not decode: {exc}") from None
            if not d.eof:
                raise CodecError(f"{self.name} stream is incomplete")
            rest = d.unused_data
            if not rest:
                break
            if not self.allow_concatenation:
                raise CodecError(f"{len(rest)} stray bytes after the {self.name} stream")
        return out


class GzipCodec(DefaultCodec):
    """One gzip member per unit; like Hadoop's reader we accept concatenated members.

    The member header is written by hand as Hadoop's pure-Java compressor
    writes it (no flags, mtime 0, OS 0), so our files match Hadoop's byte for byte.
    """

    name = "gzip"
    class_name = "org.apache.hadoop.io.compress.GzipCodec"
    wbits = 31
    allow_concatenation = True
    _HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x00"

    def compress(self, pieces: Sequence[Buffer]) -> list[Buffer]:
        c = zlib.compressobj(self.level, zlib.DEFLATED, -zlib.MAX_WBITS)
        out: list[Buffer] = [self._HEADER]
        crc = 0
        size = 0
        for p in pieces:
            crc = zlib.crc32(p, crc)
            size += len(p)
            part = c.compress(p)
            if part:
                out.append(part)
        out.append(c.flush())
        out.append(struct.pack("<II", crc, size & 0xFFFFFFFF))
        return out


class _BlockFramedCodec(Codec):
    """Hadoop's BlockCompressorStream framing around a raw block compressor."""

    #: Per-segment overhead Hadoop reserves; MAX_INPUT_SIZE = buffer - overhead.
    overhead: int = 0
    #: Upper bound of uncompressed bytes one compressed byte can stand for.
    max_ratio: int = 256

    @property
    def max_input(self) -> int:
        return HADOOP_BLOCK_BUFFER - self.overhead

    def _compress_segment(self, seg: Buffer) -> Buffer:
        raise NotImplementedError

    def _decompress_segment(self, seg: memoryview, room: int) -> Buffer:
        raise NotImplementedError

    def compress(self, pieces: Sequence[Buffer]) -> list[Buffer]:
        total = sum(len(p) for p in pieces)
        out: list[Buffer] = [_INT.pack(total)]
        for seg in _segments(pieces, self.max_input):
            comp = self._compress_segment(seg)
            out.append(_INT.pack(len(comp)))
            out.append(comp)
        return out

    def decompress(self, data: memoryview, limit: int) -> bytes:
        out: list[Buffer] = []
        produced = 0
        pos = 0
        n = len(data)
        while pos < n:
            if pos + 4 > n:
                raise CodecError(f"{self.name} framing ends inside a length at unit byte {pos}")
            (total,) = _INT.unpack_from(data, pos)
            pos += 4
            if total < 0 or produced + total > limit:
                raise CodecError(f"{self.name} framing declares an impossible length {total}")
            got = 0
            while got < total:
                if pos + 4 > n:
                    raise CodecError(f"{self.name} framing ends inside a length at unit byte {pos}")
                (clen,) = _INT.unpack_from(data, pos)
                pos += 4
                if clen <= 0 or clen > n - pos:
                    raise CodecError(f"{self.name} segment length {clen} is impossible here")
                room = min(total - got, clen * self.max_ratio + 64)
                try:
                    seg = self._decompress_segment(data[pos : pos + clen], room)
                except CodecError:
                    raise
                except Exception as exc:  # the bindings raise their own error types
                    raise CodecError(f"{self.name} segment does not decode: {exc}") from None
                if not len(seg):
                    raise CodecError(f"{self.name} segment decodes to nothing")
                pos += clen
                got += len(seg)
                out.append(seg)
            if got != total:
                raise CodecError(f"{self.name} segments give {got} bytes, framing says {total}")
            produced += total
        return b"".join(out)


class Lz4Codec(_BlockFramedCodec):
    """Raw LZ4 blocks (no size prefix), as lz4-java writes them for Hadoop."""

    name = "lz4"
    class_name = "org.apache.hadoop.io.compress.Lz4Codec"
    overhead = HADOOP_BLOCK_BUFFER // 255 + 16

    def _compress_segment(self, seg: Buffer) -> Buffer:
        return lz4.block.compress(seg, store_size=False)

    def _decompress_segment(self, seg: memoryview, room: int) -> Buffer:
        return lz4.block.decompress(seg, uncompressed_size=room)


class SnappyCodec(_BlockFramedCodec):
    """Raw Snappy (no framing format), as snappy-java writes it for Hadoop."""

    name = "snappy"
    class_name = "org.apache.hadoop.io.compress.SnappyCodec"
    overhead = HADOOP_BLOCK_BUFFER // 6 + 32

    def _compress_segment(self, seg: Buffer) -> Buffer:
        return cramjam.snappy.compress_raw(seg)

    def _decompress_segment(self, seg: memoryview, room: int) -> Buffer:
        size = cramjam.snappy.decompress_raw_len(seg)
        if size > room:
            raise CodecError(f"snappy segment claims {size} bytes, at most {room} fit")
        return cramjam.snappy.decompress_raw(seg)


def _segments(pieces: Sequence[Buffer], size: int) -> list[Buffer]:
    """Cut the concatenation of ``pieces`` into runs of ``size`` bytes.

    A run that lies inside one piece is a zero-copy view; only runs that
    straddle pieces are joined.
    """
    segs: list[Buffer] = []
    pending: list[memoryview] = []
    pending_len = 0
    for piece in pieces:
        mv = memoryview(piece).cast("B")
        pos = 0
        while pos < len(mv):
            take = min(size - pending_len, len(mv) - pos)
            pending.append(mv[pos : pos + take])
            pending_len += take
            pos += take
            if pending_len == size:
                segs.append(pending[0] if len(pending) == 1 else b"".join(pending))
                pending, pending_len = [], 0
    if pending_len:
        segs.append(pending[0] if len(pending) == 1 else b"".join(pending))
    return segs


_BY_NAME: dict[str, type[Codec]] = {c.name: c for c in (DefaultCodec, GzipCodec, Lz4Codec, SnappyCodec)}
_BY_CLASS: dict[str, type[Codec]] = {
    c.class_name: c for c in (DefaultCodec, GzipCodec, Lz4Codec, SnappyCodec)
}
# DeflateCodec is Hadoop's alias of DefaultCodec (same zlib streams).
_BY_CLASS["org.apache.hadoop.io.compress.DeflateCodec"] = DefaultCodec

CODEC_NAMES = tuple(_BY_NAME)


def codec_by_name(name: str) -> Codec:
    """Codec for a short name (``deflate``, ``gzip``, ``lz4``, ``snappy``)."""
    try:
        return _BY_NAME[name]()
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (choose from {', '.join(CODEC_NAMES)})") from None


def codec_by_class(class_name: str) -> Codec:
    """Codec for the Hadoop class name stored in a header; ``ValueError`` if unsupported."""
    try:
        return _BY_CLASS[class_name]()
    except KeyError:
        raise ValueError(f"unsupported codec class {class_name!r}") from None
