"""Decoding untrusted Thrift bytes (binary and compact protocols) without trusting a single length.

thriftpy2's decoders are fine for bytes we wrote ourselves but not for bytes
from the network: its Cython decoder allocates whatever a length field says
(and reads past the data), and its pure-Python decoders loop over counts
that nothing backs (a list of two billion elements of an unknown type is
"skipped" one by one).  A collector must not be stopped by one bad frame, so
every message received from a peer is decoded here instead: every string
length and container count is checked against the bytes that remain before
anything is built, unknown types are errors, nesting is bounded, and any
problem raises :class:`DecodeError`.

Lengths backed by bytes are not enough: an empty struct is one byte on the
wire and about 250 bytes as a Python object, so a 2 MiB list of them would
decode to half a gigabyte.  Every decoded value is therefore charged its
in-memory cost (``*_COST`` below, measured on CPython 3.11) against a budget
of ``MAX_EXPANSION`` bytes per input byte (plus ``BUDGET_SLACK``); a message
that would need more is refused before it is built.

Decoding is driven by thriftpy2's generated ``thrift_spec`` and produces
thriftpy2's struct objects, so handlers see what thriftpy2 would give them.
Encoding (our own replies) stays with thriftpy2.
"""

from __future__ import annotations

import struct
from typing import Any

from thriftpy2.thrift import TType

MAX_DEPTH = 32
#: Decoded objects may take at most this many bytes of memory per byte of input ...
MAX_EXPANSION = 8
#: ... plus this much, so small messages of small values always decode.
BUDGET_SLACK = 256 * 1024
#: Memory charged per decoded value (CPython 3.11: struct object with its attribute dict,
#: bytes/str header, int, container header, container slot).
STRUCT_COST = 256
FIELD_COST = 48
STRING_COST = 40
INT_COST = 32
CONTAINER_COST = 64
SLOT_COST = 8
MAP_ENTRY_COST = 48

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_DBL = struct.Struct(">d")
_DBL_LE = struct.Struct("<d")

#: Fewest bytes one value of a type takes in the binary protocol (to bound element counts).
_BIN_MIN = {TType.BOOL: 1, TType.BYTE: 1, TType.I16: 2, TType.I32: 4, TType.I64: 8, TType.DOUBLE: 8,
            TType.STRING: 4, TType.STRUCT: 1, TType.MAP: 6, TType.SET: 5, TType.LIST: 5}

# Compact protocol type codes (Apache Thrift TCompactProtocol).
_C_TRUE, _C_FALSE, _C_BYTE, _C_I16, _C_I32, _C_I64, _C_DOUBLE, _C_BINARY, _C_LIST, _C_SET, _C_MAP, _C_STRUCT = range(
    1, 13)
_C_TO_TTYPE = {_C_TRUE: TType.BOOL, _C_FALSE: TType.BOOL, _C_BYTE: TType.BYTE, _C_I16: TType.I16,
               _C_I32: TType.I32, _C_I64: TType.I64, _C_DOUBLE: TType.DOUBLE, _C_BINARY: TType.STRING,
               _C_LIST: TType.LIST, _C_SET: TType.SET, _C_MAP: TType.MAP, _C_STRUCT: TType.STRUCT}


def _value_cost(wire: int) -> int:
    """Memory one decoded value of a wire type takes beyond its bytes (structs and containers charge themselves)."""
    if wire == TType.STRING:
        return STRING_COST
    if wire in (TType.BYTE, TType.I16, TType.I32, TType.I64, TType.DOUBLE):
        return INT_COST
    return 0


def _struct_cost(cls: type) -> int:
    return STRUCT_COST + FIELD_COST * len(cls.thrift_spec)


class DecodeError(ValueError):
    """The bytes are not a well-formed Thrift message of the expected service."""


def _wire_type(ttype: int) -> int:
    return TType.STRING if ttype in (TType.BINARY, TType.UTF8, TType.UTF16) else ttype


def _split(spec: Any) -> tuple[int, Any]:
    """(ttype, subspec) from a container element spec: ``11`` or ``(12, Cls)``."""
    if isinstance(spec, tuple):
        return spec[0], spec[1]
    return spec, None


class _Reader:
    """Shared logic: struct decoding against a thrift_spec; the protocol classes read the primitives."""

    def __init__(self, data: bytes | bytearray | memoryview, text: bool) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.end = len(self.data)
        self.text = text  # decode STRING fields to str (BINARY fields stay bytes)
        self.budget = self.end * MAX_EXPANSION + BUDGET_SLACK

    def charge(self, cost: int) -> None:
        """Spend ``cost`` bytes of the decode budget; DecodeError once it is exhausted."""
        self.budget -= cost
        if self.budget < 0:
            raise DecodeError(f"message of {self.end} bytes would decode to more than "
                              f"{MAX_EXPANSION}x its size in memory (offset {self.pos})")

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise DecodeError(f"length {n} at offset {self.pos} exceeds the {self.end - self.pos} bytes left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def check_count(self, count: int, min_size: int) -> None:
        if count < 0 or count * min_size > self.end - self.pos:
            raise DecodeError(f"container of {count} elements at offset {self.pos} cannot fit "
                              f"in the {self.end - self.pos} bytes left")

    def text_or_bytes(self, raw: bytes, spec_type: int) -> Any:
        if self.text and spec_type == TType.STRING:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                return raw
        return raw

    def read_struct(self, cls: type, depth: int = 0) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError("structures nested too deeply")
        self.charge(_struct_cost(cls))
        obj = cls()
        spec = cls.thrift_spec
        for fid, wire, value in self.fields(depth):
            field = spec.get(fid)
            if field is None or _wire_type(field[0]) != wire:
                self.skip(wire, value, depth)
                continue
            sub = field[2] if len(field) == 4 else None
            setattr(obj, field[1], self.read_value(field[0], sub, depth, value))
        return obj

    def read_value(self, ttype: int, sub: Any, depth: int, preread: Any = None) -> Any:
        raise NotImplementedError

    def fields(self, depth: int):  # yields (field id, wire ttype, pre-read value or None)
        raise NotImplementedError

    def skip(self, wire: int, preread: Any, depth: int) -> None:
        raise NotImplementedError


class BinaryReader(_Reader):
    """TBinaryProtocol (strict or old non-strict message headers)."""

    def byte(self) -> int:
        if self.pos >= self.end:
            raise DecodeError("message ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b - 256 if b > 127 else b

    def i16(self) -> int:
        p = self.pos
        if p + 2 > self.end:
            raise DecodeError("message ends early")
        self.pos = p + 2
        return _I16.unpack_from(self.data, p)[0]

    def i32(self) -> int:
        p = self.pos
        if p + 4 > self.end:
            raise DecodeError("message ends early")
        self.pos = p + 4
        return _I32.unpack_from(self.data, p)[0]

    def i64(self) -> int:
        p = self.pos
        if p + 8 > self.end:
            raise DecodeError("message ends early")
        self.pos = p + 8
        return _I64.unpack_from(self.data, p)[0]

    def read_struct(self, cls: type, depth: int = 0) -> Any:
        """Fast path: a per-class plan of field readers (the hot loop for batches of many chunk headers)."""
        if depth > MAX_DEPTH:
            raise DecodeError("structures nested too deeply")
        plan, defaults, cost = _binary_plan(cls)
        self.budget -= cost
        if self.budget < 0:
            self.charge(0)
        values = dict(defaults)
        data, end = self.data, self.end
        while True:
            p = self.pos
            if p >= end:
                raise DecodeError("message ends early")
            wire = data[p]
            if wire == TType.STOP:
                self.pos = p + 1
                obj = object.__new__(cls)  # what cls() would make, without running its __init__
                obj.__dict__.update(values)
                return obj
            if p + 3 > end:
                raise DecodeError("message ends early")
            entry = plan.get(_I16_FROM(data, p + 1)[0])
            self.pos = p + 3
            if entry is None or entry[1] != wire:
                self.skip(wire, None, depth)
            else:
                values[entry[0]] = entry[2](self, depth)

    def message_begin(self, strict: bool) -> tuple[str, int, int]:
        head = self.i32()
        if head < 0:
            if (head & 0xFFFF0000) != 0x80010000:
                raise DecodeError(f"bad binary protocol version word {head & 0xFFFFFFFF:#x}")
            mtype = head & 0xFF
            name = self.take(self.i32())
        else:
            if strict:
                raise DecodeError("message header without version word")
            name = self.take(head)
            mtype = self.byte()
        seqid = self.i32()
        try:
            return name.decode("utf-8"), mtype, seqid
        except UnicodeDecodeError:
            raise DecodeError("method name is not UTF-8") from None

    def fields(self, depth: int):
        while True:
            wire = self.byte()
            if wire == TType.STOP:
                return
            yield self.i16(), wire, None

    def read_value(self, ttype: int, sub: Any, depth: int, preread: Any = None) -> Any:
        wire = _wire_type(ttype)
        if wire == TType.STRING:
            return self.text_or_bytes(self.take(self.i32()), ttype)
        if wire == TType.I64:
            return self.i64()
        if wire == TType.I32:
            return self.i32()
        if wire == TType.I16:
            return self.i16()
        if wire in (TType.BYTE, TType.BOOL):
            v = self.byte()
            return bool(v) if wire == TType.BOOL else v
        if wire == TType.DOUBLE:
            return _DBL.unpack(self.take(8))[0]
        if wire == TType.STRUCT:
            return self.read_struct(sub, depth + 1)
        if wire in (TType.LIST, TType.SET):
            etype, esub = _split(sub)
            got, n = self.byte(), self.i32()
            self.check_count(n, _BIN_MIN.get(got, 1))
            if got != _wire_type(etype):
                for _ in range(n):
                    self.skip(got, None, depth + 1)
                return []
            self.charge(CONTAINER_COST + n * (SLOT_COST + _value_cost(got)))
            return [self.read_value(etype, esub, depth + 1) for _ in range(n)]
        if wire == TType.MAP:
            (ktype, ksub), (vtype, vsub) = _split(sub[0]), _split(sub[1])
            kgot, vgot, n = self.byte(), self.byte(), self.i32()
            self.check_count(n, _BIN_MIN.get(kgot, 1) + _BIN_MIN.get(vgot, 1))
            if kgot != _wire_type(ktype) or vgot != _wire_type(vtype):
                for _ in range(n):
                    self.skip(kgot, None, depth + 1)
                    self.skip(vgot, None, depth + 1)
                return {}
            self.charge(CONTAINER_COST + n * (MAP_ENTRY_COST + _value_cost(kgot) + _value_cost(vgot)))
            return {self.read_value(ktype, ksub, depth + 1): self.read_value(vtype, vsub, depth + 1)
                    for _ in range(n)}
        raise DecodeError(f"unknown Thrift type {ttype}")

    def skip(self, wire: int, preread: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DecodeError("structures nested too deeply")
        size = {TType.BOOL: 1, TType.BYTE: 1, TType.I16: 2, TType.I32: 4, TType.I64: 8, TType.DOUBLE: 8}.get(wire)
        if size is not None:
            self.take(size)
        elif wire == TType.STRING:
            self.take(self.i32())
        elif wire == TType.STRUCT:
            for _fid, w, _ in self.fields(depth + 1):
                self.skip(w, None, depth + 1)
        elif wire in (TType.LIST, TType.SET):
            etype, n = self.byte(), self.i32()
            self.check_count(n, _BIN_MIN.get(etype, 1))
            for _ in range(n):
                self.skip(etype, None, depth + 1)
        elif wire == TType.MAP:
            kt, vt, n = self.byte(), self.byte(), self.i32()
            self.check_count(n, _BIN_MIN.get(kt, 1) + _BIN_MIN.get(vt, 1))
            for _ in range(n):
                self.skip(kt, None, depth + 1)
                self.skip(vt, None, depth + 1)
        else:
            raise DecodeError(f"unknown Thrift type {wire}")


_PLANS: dict[type, tuple[dict[int, tuple[str, int, Any]], dict[str, Any], int]] = {}
_I16_FROM, _I32_FROM, _I64_FROM = _I16.unpack_from, _I32.unpack_from, _I64.unpack_from


def _binary_plan(cls: type) -> tuple[dict[int, tuple[str, int, Any]], dict[str, Any], int]:
    """({field id: (attribute, wire type, reader(reader, depth))}, defaults, memory cost) for a class, built once."""
    plan = _PLANS.get(cls)
    if plan is None:
        fields = {}
        for fid, field in cls.thrift_spec.items():
            sub = field[2] if len(field) == 4 else None
            fields[fid] = (field[1], _wire_type(field[0]), _binary_field_reader(field[0], sub))
        defaults = dict(getattr(cls, "default_spec", None) or [(f[1], None) for f in cls.thrift_spec.values()])
        plan = _PLANS[cls] = (fields, defaults, _struct_cost(cls))
    return plan


def _short(r: BinaryReader) -> DecodeError:
    return DecodeError(f"message ends early at offset {r.pos}")


def _rd_i64(r: BinaryReader, _depth: int) -> int:
    p = r.pos
    if p + 8 > r.end:
        raise _short(r)
    r.pos = p + 8
    return _I64_FROM(r.data, p)[0]


def _rd_i32(r: BinaryReader, _depth: int) -> int:
    p = r.pos
    if p + 4 > r.end:
        raise _short(r)
    r.pos = p + 4
    return _I32_FROM(r.data, p)[0]


def _rd_bytes(r: BinaryReader, _depth: int) -> bytes:
    p = r.pos
    if p + 4 > r.end:
        raise _short(r)
    n = _I32_FROM(r.data, p)[0]
    p += 4
    q = p + n
    if n < 0 or q > r.end:
        raise DecodeError(f"length {n} at offset {p} exceeds the {r.end - p} bytes left")
    r.pos = q
    return r.data[p:q]


def _rd_text(r: BinaryReader, _depth: int) -> Any:
    p = r.pos
    if p + 4 > r.end:
        raise _short(r)
    n = _I32_FROM(r.data, p)[0]
    p += 4
    q = p + n
    if n < 0 or q > r.end:
        raise DecodeError(f"length {n} at offset {p} exceeds the {r.end - p} bytes left")
    r.pos = q
    raw = r.data[p:q]
    if not r.text:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _binary_field_reader(ttype: int, sub: Any) -> Any:
    wire = _wire_type(ttype)
    if wire == TType.I64:
        return _rd_i64
    if wire == TType.I32:
        return _rd_i32
    if wire == TType.I16:
        return lambda r, d: r.i16()
    if wire == TType.STRING:
        return _rd_text if ttype == TType.STRING else _rd_bytes
    if wire == TType.STRUCT:
        return lambda r, d: r.read_struct(sub, d + 1)
    if wire in (TType.LIST, TType.SET):
        return _list_reader(*_split(sub))
    if wire == TType.MAP:
        return _map_reader(_split(sub[0]), _split(sub[1]))
    return lambda r, d: r.read_value(ttype, sub, d)


def _list_reader(etype: int, esub: Any) -> Any:
    ewire, elem = _wire_type(etype), _binary_field_reader(etype, esub)
    elem_cost = SLOT_COST + _value_cost(ewire)
    fixed = {_rd_i64: ("q", 8), _rd_i32: ("i", 4)}.get(elem)  # unpacked all at once, not one call each

    def read(r: BinaryReader, depth: int) -> list:
        if depth > MAX_DEPTH:
            raise DecodeError("structures nested too deeply")
        got, n = r.byte(), r.i32()
        r.check_count(n, _BIN_MIN.get(got, 1))
        if got != ewire:
            for _ in range(n):
                r.skip(got, None, depth + 1)
            return []
        r.charge(CONTAINER_COST + n * elem_cost)
        if ewire == TType.STRUCT:
            return [r.read_struct(esub, depth + 1) for _ in range(n)]
        if fixed is not None:  # a chunk's record_ends: one i64 per record
            p, size = r.pos, n * fixed[1]
            if p + size > r.end:
                raise _short(r)
            r.pos = p + size
            return list(struct.unpack_from(f">{n}{fixed[0]}", r.data, p))
        return [elem(r, depth + 1) for _ in range(n)]

    return read


def _map_reader(kspec: tuple[int, Any], vspec: tuple[int, Any]) -> Any:
    kwire, vwire = _wire_type(kspec[0]), _wire_type(vspec[0])
    key, value = _binary_field_reader(*kspec), _binary_field_reader(*vspec)
    entry_cost = MAP_ENTRY_COST + _value_cost(kwire) + _value_cost(vwire)

    def read(r: BinaryReader, depth: int) -> dict:
        if depth > MAX_DEPTH:
            raise DecodeError("structures nested too deeply")
        kgot, vgot, n = r.byte(), r.byte(), r.i32()
        r.check_count(n, _BIN_MIN.get(kgot, 1) + _BIN_MIN.get(vgot, 1))
        if kgot != kwire or vgot != vwire:
            for _ in range(n):
                r.skip(kgot, None, depth + 1)
                r.skip(vgot, None, depth + 1)
            return {}
        r.charge(CONTAINER_COST + n * entry_cost)
        return {key(r, depth + 1): value(r, depth + 1) for _ in range(n)}

    return read


class CompactReader(_Reader):
    """TCompactProtocol."""

    def ubyte(self) -> int:
        if self.pos >= self.end:
            raise DecodeError("message ends early")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.ubyte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise DecodeError("varint longer than 10 bytes")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def message_begin(self) -> tuple[str, int, int]:
        if self.ubyte() != 0x82:
            raise DecodeError("not a compact protocol message")
        vt = self.ubyte()
        if vt & 0x1F != 1:
            raise DecodeError(f"bad compact protocol version {vt & 0x1F}")
        seqid = self.varint()
        name = self.take(self.varint())
        try:
            return name.decode("utf-8"), (vt >> 5) & 0x07, seqid
        except UnicodeDecodeError:
            raise DecodeError("method name is not UTF-8") from None

    def fields(self, depth: int):
        last = 0
        while True:
            b = self.ubyte()
            if b == 0:
                return
            ctype, delta = b & 0x0F, b >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            if ctype not in _C_TO_TTYPE:
                raise DecodeError(f"unknown compact type {ctype}")
            preread = None
            if ctype in (_C_TRUE, _C_FALSE):
                preread = ctype == _C_TRUE
            yield fid, _C_TO_TTYPE[ctype], preread

    def _collection_header(self) -> tuple[int, int]:
        b = self.ubyte()
        n, ctype = b >> 4, b & 0x0F
        if n == 15:
            n = self.varint()
        if ctype not in _C_TO_TTYPE:
            raise DecodeError(f"unknown compact element type {ctype}")
        self.check_count(n, 1)
        return n, _C_TO_TTYPE[ctype]

    def _map_header(self) -> tuple[int, int, int]:
        n = self.varint()
        if n == 0:
            return 0, TType.STOP, TType.STOP
        b = self.ubyte()
        kc, vc = b >> 4, b & 0x0F
        if kc not in _C_TO_TTYPE or vc not in _C_TO_TTYPE:
            raise DecodeError("unknown compact map key/value type")
        self.check_count(n, 2)
        return n, _C_TO_TTYPE[kc], _C_TO_TTYPE[vc]

    def read_value(self, ttype: int, sub: Any, depth: int, preread: Any = None) -> Any:
        wire = _wire_type(ttype)
        if wire == TType.BOOL:
            return preread if preread is not None else self.ubyte() == _C_TRUE
        if wire == TType.STRING:
            return self.text_or_bytes(self.take(self.varint()), ttype)
        if wire in (TType.I16, TType.I32, TType.I64):
            return self.zigzag()
        if wire == TType.BYTE:
            b = self.ubyte()
            return b - 256 if b > 127 else b
        if wire == TType.DOUBLE:
            return _DBL_LE.unpack(self.take(8))[0]
        if wire == TType.STRUCT:
            return self.read_struct(sub, depth + 1)
        if wire in (TType.LIST, TType.SET):
            etype, esub = _split(sub)
            n, got = self._collection_header()
            if got != _wire_type(etype):
                for _ in range(n):
                    self.skip(got, None, depth + 1)
                return []
            self.charge(CONTAINER_COST + n * (SLOT_COST + _value_cost(got)))
            return [self.read_value(etype, esub, depth + 1) for _ in range(n)]
        if wire == TType.MAP:
            (ktype, ksub), (vtype, vsub) = _split(sub[0]), _split(sub[1])
            n, kgot, vgot = self._map_header()
            if n and (kgot != _wire_type(ktype) or vgot != _wire_type(vtype)):
                for _ in range(n):
                    self.skip(kgot, None, depth + 1)
                    self.skip(vgot, None, depth + 1)
                return {}
            self.charge(CONTAINER_COST + n * (MAP_ENTRY_COST + _value_cost(kgot) + _value_cost(vgot)))
            return {self.read_value(ktype, ksub, depth + 1): self.read_value(vtype, vsub, depth + 1)
                    for _ in range(n)}
        raise DecodeError(f"unknown Thrift type {ttype}")

    def skip(self, wire: int, preread: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DecodeError("structures nested too deeply")
        if wire == TType.BOOL:
            if preread is None:
                self.ubyte()
        elif wire == TType.BYTE:
            self.ubyte()
        elif wire in (TType.I16, TType.I32, TType.I64):
            self.varint()
        elif wire == TType.DOUBLE:
            self.take(8)
        elif wire == TType.STRING:
            self.take(self.varint())
        elif wire == TType.STRUCT:
            for _fid, w, pre in self.fields(depth + 1):
                self.skip(w, pre, depth + 1)
        elif wire in (TType.LIST, TType.SET):
            n, et = self._collection_header()
            for _ in range(n):
                self.skip(et, None, depth + 1)
        elif wire == TType.MAP:
            n, kt, vt = self._map_header()
            for _ in range(n):
                self.skip(kt, None, depth + 1)
                self.skip(vt, None, depth + 1)
        else:
            raise DecodeError(f"unknown Thrift type {wire}")


def decode_call(data: bytes | bytearray | memoryview, service: Any, protocol: str = "binary", *,
                strict: bool = True, text: bool = True, types: tuple[int, ...] = (1, 4)) -> tuple[str, int, int, Any]:
    """Decode one message calling ``service``: (method, message type, seqid, the method's ``_args`` struct).

    ``types`` are the accepted message types (CALL=1, ONEWAY=4); replies use
    :func:`decode_reply`.  Bytes after the message are an error.
    """
    return _decode(data, service, protocol, strict, text, types, "_args")


def decode_reply(data: bytes | bytearray | memoryview, service: Any, *, text: bool = True) -> tuple[str, int, int, Any]:
    """Decode a REPLY (2) message of ``service`` (binary protocol): the method's ``_result`` struct."""
    return _decode(data, service, "binary", True, text, (2,), "_result")


def _decode(data: Any, service: Any, protocol: str, strict: bool, text: bool, types: tuple[int, ...],
            suffix: str) -> tuple[str, int, int, Any]:
    if protocol == "compact":
        reader: _Reader = CompactReader(data, text)
        name, mtype, seqid = reader.message_begin()  # type: ignore[attr-defined]
    else:
        reader = BinaryReader(data, text)
        name, mtype, seqid = reader.message_begin(strict)  # type: ignore[attr-defined]
    if mtype not in types:
        raise DecodeError(f"unexpected message type {mtype} for {name!r}")
    if name not in service.thrift_services:
        raise DecodeError(f"unknown method {name!r}")
    payload = reader.read_struct(getattr(service, name + suffix))
    if reader.pos != reader.end:
        raise DecodeError(f"{reader.end - reader.pos} stray bytes after the message")
    return name, mtype, seqid, payload
