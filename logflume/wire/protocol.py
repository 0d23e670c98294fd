"""The logflume frame: a Thrift binary message header followed by raw chunk bodies.

    b"LFW1" | u32 header_len | u64 body_len | header | bodies

The header is a strict TBinaryProtocol message of the ``LogFlume`` service in
``logflume.thrift``.  Bodies are not Thrift-encoded: they follow the header in
``Batch.chunks`` order, so the sender writes each chunk's buffer as is and the
receiver reads it with ``recv_into``.  Sizes are checked against the limit
from the 16-byte prefix, before anything is allocated.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from typing import Any

import lz4.frame
import zstandard
from thriftpy2.thrift import TMessageType

from logflume.chunk import Chunk
from logflume.wire.idl import PROTOCOL_VERSION, Compression, logflume_thrift
from logflume.wire.safe_thrift import DecodeError, decode_call, decode_reply

try:  # the Cython encoder is ~10x faster for batches of many small chunks (it only ever encodes our own data)
    from thriftpy2.protocol.cybin import TCyBinaryProtocol as _Protocol
    from thriftpy2.transport.memory import TCyMemoryBuffer as _Memory
except ImportError:  # pragma: no cover - pure-Python thriftpy2 build
    from thriftpy2.protocol.binary import TBinaryProtocol as _Protocol  # type: ignore[assignment]
    from thriftpy2.transport.memory import TMemoryBuffer as _Memory  # type: ignore[assignment]

MAGIC = b"LFW1"
PREFIX = struct.Struct(">4sIQ")
#: The Thrift header of one frame may not exceed this (it only carries metadata).
MAX_HEADER = 16 * 1024 * 1024
#: Largest zstd window accepted from a peer (bounds the decompressor's memory).
MAX_ZSTD_WINDOW = 16 * 1024 * 1024
COMPRESSIONS = {"none": Compression.NONE, "zstd": Compression.ZSTD, "lz4": Compression.LZ4}

Service = logflume_thrift.LogFlume
ChunkHeader = logflume_thrift.ChunkHeader
Batch = logflume_thrift.Batch
Ack = logflume_thrift.Ack
Hello = logflume_thrift.Hello
Welcome = logflume_thrift.Welcome


class ProtocolError(ValueError):
    """The peer sent bytes that are not a valid logflume frame (garbage, wrong sizes, bad Thrift)."""


def encode_message(name: str, mtype: int, seqid: int, payload: Any) -> bytes:
    """A Thrift binary message (``payload`` is the method's ``_args`` or ``_result`` struct)."""
    trans = _Memory()
    proto = _Protocol(trans)
    proto.write_message_begin(name, mtype, seqid)
    payload.write(proto)
    proto.write_message_end()
    return trans.getvalue()


def decode_message(raw: bytes | bytearray, expect_type: int = TMessageType.CALL) -> tuple[str, int, int, Any]:
    """(method, message type, seqid, the ``_args`` (CALL) or ``_result`` (REPLY) struct); ProtocolError if malformed.

    Decoded with :mod:`logflume.wire.safe_thrift`, which trusts no length: these bytes come from the network.
    """
    try:
        if expect_type == TMessageType.REPLY:
            return decode_reply(raw, Service)
        return decode_call(raw, Service, types=(expect_type,))
    except DecodeError as exc:
        raise ProtocolError(f"malformed Thrift header: {exc}") from None


def method_name(raw: bytes | bytearray) -> str:
    """The method a strict binary message calls, read without decoding its arguments; ProtocolError otherwise."""
    if len(raw) < 8 or raw[:2] != b"\x80\x01":
        raise ProtocolError("malformed Thrift header: not a strict binary message")
    n = struct.unpack_from(">i", raw, 4)[0]
    if not 0 < n <= 64 or 8 + n > len(raw):
        raise ProtocolError("malformed Thrift header: bad method name length")
    return bytes(raw[8:8 + n]).decode("ascii", "replace")


def pack_prefix(header_len: int, body_len: int) -> bytes:
    return PREFIX.pack(MAGIC, header_len, body_len)


def unpack_prefix(raw: bytes | bytearray, max_frame_size: int) -> tuple[int, int]:
    """(header_len, body_len) after checking magic and sizes; ProtocolError otherwise."""
    magic, header_len, body_len = PREFIX.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError(f"not a logflume frame (starts with {bytes(raw[:4])!r}, expected {MAGIC!r})")
    if header_len == 0 or header_len > MAX_HEADER:
        raise ProtocolError(f"frame header of {header_len} bytes (limit {MAX_HEADER})")
    if header_len + body_len > max_frame_size:
        raise ProtocolError(f"frame of {header_len + body_len} bytes exceeds max_frame_size {max_frame_size}")
    return header_len, body_len


_codecs = threading.local()  # zstd (de)compressor objects are costly to make and not shareable between threads


def _zstd_compressor() -> zstandard.ZstdCompressor:
    c = getattr(_codecs, "zc", None)
    if c is None:
        c = _codecs.zc = zstandard.ZstdCompressor(level=1)
    return c


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_codecs, "zd", None)
    if d is None:
        # a hostile frame may ask for a huge window; ours (level 1) need far less than 16 MiB
        d = _codecs.zd = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW)
    return d


def compress(data: Any, compression: str) -> bytes:
    if compression == "zstd":
        return _zstd_compressor().compress(data)
    if compression == "lz4":
        return lz4.frame.compress(data, compression_level=0)
    raise ValueError(f"unknown compression {compression!r}")


def decompress(data: memoryview, codec: int, length: int) -> bytes:
    """Inflate one body, never producing (or allocating) more than the declared ``length`` (+1 to detect lies)."""
    try:
        if codec == Compression.ZSTD:
            declared = zstandard.frame_content_size(data)
            if declared >= 0 and declared != length:  # the frame's own size would be allocated up front
                raise ProtocolError(f"zstd body says {declared} bytes, header says {length}")
            with _zstd_decompressor().stream_reader(data) as reader:
                out = reader.read(length + 1)
                while len(out) <= length:
                    more = reader.read(length + 1 - len(out))
                    if not more:
                        break
                    out += more
        elif codec == Compression.LZ4:
            inflater = lz4.frame.LZ4FrameDecompressor()
            out = inflater.decompress(data, max_length=length + 1)
            if len(out) == length and not inflater.eof:
                raise ProtocolError(f"lz4 body is truncated or inflates past the {length} bytes its header says")
        else:
            raise ProtocolError(f"unknown compression code {codec}")
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"cannot decompress body: {type(exc).__name__}: {exc}") from None
    if len(out) > length:
        raise ProtocolError(f"body inflates to more than the {length} bytes its header says")
    if len(out) < length:
        raise ProtocolError(f"body inflates to {len(out)} bytes, its header says {length}")
    return out


def encode_batch(
    chunks: Sequence[Chunk], *, sender: str, token: str | None, compression: str = "none", seqid: int = 0,
) -> tuple[bytes, list[Any]]:
    """The frame prefix+header and the list of bodies to send after it (the chunks' own buffers when uncompressed)."""
    headers = []
    bodies: list[Any] = []
    code = COMPRESSIONS[compression]
    for c in chunks:
        body = c.data if code == Compression.NONE else compress(c.data, compression)
        bodies.append(body)
        headers.append(ChunkHeader(
            source=c.source, stream=c.stream, datatype=c.datatype, tags=dict(c.tags), seq_id=c.seq_id,
            epoch=c.epoch, record_ends=list(c.record_ends) if c.record_ends is not None else None,
            timestamp=c.timestamp, flags=list(c.flags), length=len(c.data), wire_length=len(body),
            compression=code,
        ))
    batch = Batch(version=PROTOCOL_VERSION, token=token, sender=sender, chunks=headers)
    header = encode_message("deliver", TMessageType.CALL, seqid, Service.deliver_args(batch=batch))
    body_len = sum(len(b) for b in bodies)
    return pack_prefix(len(header), body_len) + header, bodies


def encode_call(name: str, seqid: int, **args: Any) -> bytes:
    """A complete frame for a bodiless call (``ping``)."""
    header = encode_message(name, TMessageType.CALL, seqid, getattr(Service, name + "_args")(**args))
    return pack_prefix(len(header), 0) + header


def encode_reply(name: str, seqid: int, result: Any) -> bytes:
    """A complete frame for the reply to ``name``."""
    header = encode_message(name, TMessageType.REPLY, seqid, getattr(Service, name + "_result")(success=result))
    return pack_prefix(len(header), 0) + header


def chunk_from_header(h: Any, body: Any) -> Chunk:
    """Rebuild a chunk from its wire header and (already decompressed) bytes."""
    tags = h.tags
    if tags and not all(type(k) is str and type(v) is str for k, v in tags.items()):
        tags = {_text(k): _text(v) for k, v in tags.items()}
    flags = h.flags
    return Chunk(
        source=_text(h.source), stream=_text(h.stream), datatype=_text(h.datatype), seq_id=int(h.seq_id),
        epoch=_text(h.epoch), data=body, tags=dict(tags) if tags else {},
        record_ends=list(h.record_ends) if h.record_ends is not None else None,
        timestamp=int(h.timestamp or 0), flags=[_text(f) for f in flags] if flags else [],
    )


def _text(v: Any) -> str:
    if type(v) is str:
        return v
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, (bytes, bytearray)) else str(v)


def validate_batch(batch: Any, body_len: int, max_frame_size: int) -> int:
    """Check the batch's declared sizes; the bytes it will take in memory once inflated, or ProtocolError.

    The declared (decompressed) lengths are what decompression will produce, so
    they are held to the same limit as the frame: a few KiB of zstd may not
    announce gigabytes.  The result (bodies as received plus what compressed
    ones inflate to) is what admission must reserve before anything is read.
    """
    if batch is None or batch.chunks is None:
        raise ProtocolError("deliver call without a batch")
    total = inflated = declared = 0
    for i, h in enumerate(batch.chunks):
        if h.wire_length is None or h.wire_length < 0 or h.length is None or h.length < 0:
            raise ProtocolError(f"chunk {i}: missing or negative length")
        if h.compression in (None, Compression.NONE):
            if h.length != h.wire_length:
                raise ProtocolError(f"chunk {i}: length {h.length} != wire_length {h.wire_length} without compression")
        else:
            inflated += h.length
        if h.source is None or h.stream is None or h.seq_id is None:
            raise ProtocolError(f"chunk {i}: missing source, stream or seq_id")
        total += h.wire_length
        declared += h.length
    if total != body_len:
        raise ProtocolError(f"chunk bodies add up to {total} bytes, frame carries {body_len}")
    if declared > max_frame_size:
        raise ProtocolError(f"chunks declare {declared} bytes once decompressed, more than max_frame_size "
                            f"{max_frame_size}")
    return body_len + inflated
