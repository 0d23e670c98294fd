"""Hadoop Writable serializations we support, and the class-name registry.

Hadoop loads key and value classes by the names stored in the header, so the
names are the real Java class names.  Each :class:`Writable` knows how to turn a
Python value into its *payload* (the bytes without any length prefix), how to
frame a payload as the complete serialization, and how to split a complete
serialization back into its payload.  Keeping payloads separate lets the writer
hand a chunk's bytes to ``write()`` without copying them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TEXT = "org.apache.hadoop.io.Text"
BYTES_WRITABLE = "org.apache.hadoop.io.BytesWritable"
LONG_WRITABLE = "org.apache.hadoop.io.LongWritable"
NULL_WRITABLE = "org.apache.hadoop.io.NullWritable"

Buffer = bytes | bytearray | memoryview

_INT = struct.Struct(">i")
_LONG = struct.Struct(">q")

_VINT_MAX = (1 << 31) - 1
_VINT_MIN = -(1 << 31)
_VLONG_MAX = (1 << 63) - 1
_VLONG_MIN = -(1 << 63)


def encode_vlong(value: int) -> bytes:
    """Hadoop's ``WritableUtils.writeVLong``: always the shortest form, 1-9 bytes."""
    if not _VLONG_MIN <= value <= _VLONG_MAX:
        raise ValueError(f"{value} does not fit in a Java long")
    if -112 <= value <= 127:
        return struct.pack(">b", value)
    if value < 0:
        magnitude = ~value  # one's complement, -value - 1
        first = -120
    else:
        magnitude = value
        first = -112
    n = (magnitude.bit_length() + 7) // 8
    return struct.pack(">b", first - n) + magnitude.to_bytes(n, "big")


def encode_vint(value: int) -> bytes:
    """Hadoop's ``WritableUtils.writeVInt`` (a VLong that must fit in an int)."""
    if not _VINT_MIN <= value <= _VINT_MAX:
        raise ValueError(f"{value} does not fit in a Java int")
    return encode_vlong(value)


def vint_size(first_byte: int) -> int:
    """Total encoded length (1-9) given the first byte (0-255, unsigned)."""
    b = first_byte - 256 if first_byte > 127 else first_byte
    if b >= -112:
        return 1
    if b >= -120:
        return -111 - b
    return -119 - b


def decode_vlong(buf: Buffer, pos: int) -> tuple[int, int]:
    """Decode one VLong at ``buf[pos]``; return (value, position after it).

    Raises ``IndexError`` when the buffer ends inside the number, so callers
    can tell "truncated" from "corrupt".
    """
    first = buf[pos]
    size = vint_size(first)
    if size == 1:
        return (first - 256 if first > 127 else first), pos + 1
    end = pos + size
    if end > len(buf):
        raise IndexError("VLong runs past the end of the buffer")
    magnitude = int.from_bytes(buf[pos + 1 : end], "big")
    signed_first = first - 256
    return (~magnitude if signed_first < -120 else magnitude), end


def decode_vint(buf: Buffer, pos: int) -> tuple[int, int]:
    """Decode a VInt; ``ValueError`` if it does not fit in 32 bits (as Hadoop)."""
    value, end = decode_vlong(buf, pos)
    if not _VINT_MIN <= value <= _VINT_MAX:
        raise ValueError(f"VInt {value} too long to fit in an int")
    return value, end


@dataclass(frozen=True, slots=True)
class Writable:
    """How one Hadoop Writable class is framed and converted to Python.

    ``prefix(payload_len)`` gives the bytes that precede the payload in the
    serialization; ``split(serialized)`` returns the payload view or raises
    ``ValueError`` when the serialization is malformed.
    """

    class_name: str
    to_payload: Callable[[Any], Buffer]
    prefix: Callable[[int], bytes]
    split: Callable[[memoryview], memoryview]
    from_payload: Callable[[memoryview, bool], Any]


def _text_payload(value: Any) -> Buffer:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raise TypeError(f"Text needs str or bytes, not {type(value).__name__}")


def _text_split(ser: memoryview) -> memoryview:
    if not len(ser):
        raise ValueError("empty Text serialization")
    n, pos = decode_vint(ser, 0)
    if n < 0 or pos + n != len(ser):
        raise ValueError(f"Text length {n} does not match its {len(ser) - pos} bytes")
    return ser[pos:]


def _text_value(payload: memoryview, raw: bool) -> Any:
    return bytes(payload) if raw else str(payload, "utf-8", "replace")


def _bytes_payload(value: Any) -> Buffer:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return value
    raise TypeError(f"BytesWritable needs a bytes-like value, not {type(value).__name__}")


def _bytes_split(ser: memoryview) -> memoryview:
    if len(ser) < 4:
        raise ValueError("BytesWritable shorter than its 4-byte length")
    (n,) = _INT.unpack_from(ser, 0)
    if n != len(ser) - 4:
        raise ValueError(f"BytesWritable length {n} does not match its {len(ser) - 4} bytes")
    return ser[4:]


def _long_payload(value: Any) -> Buffer:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"LongWritable needs an int, not {type(value).__name__}")
    return _LONG.pack(value)


def _long_split(ser: memoryview) -> memoryview:
    if len(ser) != 8:
        raise ValueError(f"LongWritable is 8 bytes, not {len(ser)}")
    return ser


def _null_payload(value: Any) -> Buffer:
    if value is not None:
        raise TypeError(f"NullWritable needs None, not {type(value).__name__}")
    return b""


def _null_split(ser: memoryview) -> memoryview:
    if len(ser):
        raise ValueError(f"NullWritable is 0 bytes, not {len(ser)}")
    return ser


def _no_prefix(_n: int) -> bytes:
    return b""


WRITABLES: dict[str, Writable] = {
    TEXT: Writable(TEXT, _text_payload, encode_vint, _text_split, _text_value),
    BYTES_WRITABLE: Writable(
        BYTES_WRITABLE, _bytes_payload, _INT.pack, _bytes_split, lambda p, raw: bytes(p)
    ),
    LONG_WRITABLE: Writable(
        LONG_WRITABLE, _long_payload, _no_prefix, _long_split, lambda p, raw: _LONG.unpack(p)[0]
    ),
    NULL_WRITABLE: Writable(NULL_WRITABLE, _null_payload, _no_prefix, _null_split, lambda p, raw: None),
}


def writable(class_name: str) -> Writable:
    """The :class:`Writable` for a Hadoop class name; ``ValueError`` if unsupported."""
    try:
        return WRITABLES[class_name]
    except KeyError:
        raise ValueError(
            f"unsupported Writable class {class_name!r} (supported: {', '.join(sorted(WRITABLES))})"
        ) from None
