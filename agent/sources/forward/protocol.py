"""The Fluentd Forward protocol v1, server side: decoding the modes into events.

Modes (first element is the tag):

* Message: ``[tag, time, record, option?]``
* Forward: ``[tag, [[time, record], ...], option?]``
* PackedForward: ``[tag, <bin: concatenated msgpack [time, record]>, option?]``
* CompressedPackedForward: as PackedForward with ``option["compressed"] == "gzip"``

``time`` is an integer of seconds or an EventTime (msgpack ext type 0: 32-bit
seconds, 32-bit nanoseconds), or ``[time, metadata]`` (Fluent Bit 2.1+).
``option["chunk"]`` asks for ``{"ack": chunk}`` once the events are stored.

Decoding is bounded: the buffer never holds more than ``max_size`` bytes, a
gzip bomb inflates to at most ``max_size`` bytes, and one message may decode
into at most :func:`container_budget` arrays and maps (counted across its
packed entries too), so a message of millions of empty events costs about as
much memory as its size instead of a hundred times more.  Packed entries are
decoded one at a time as the caller consumes them.

With a ``shared_key`` the server speaks first (``HELO`` with a nonce), the
client proves the key (``PING``) and the server answers and proves it too
(``PONG``): :func:`helo`, :func:`check_ping`, :func:`pong`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson

from logflume.chunking import RecordBlock

try:
    from agent.sources.forward._packed import transcode
except ImportError:  # built without a C compiler: msgpack and orjson do it, event by event
    transcode = None
if os.environ.get("LOGFLUME_PURE_PYTHON") == "1":
    transcode = None

EVENT_TIME_CODE = 0


class ProtocolError(ValueError):
    """A message that is not Forward protocol (the caller drops the connection or the message)."""


#: Input bytes each decoded array or map must account for, on average, in a message of ``max_size``.
BYTES_PER_CONTAINER = 16
#: Arrays and maps any message may have, however small ``max_size`` is.
MIN_CONTAINERS = 4096


def container_budget(max_size: int) -> int:
    """Arrays and maps one message may decode into."""
    return max(MIN_CONTAINERS, max_size // BYTES_PER_CONTAINER)


class Budget:
    """Counts the arrays and maps decoded for one message; refuses past ``limit``.

    Its :meth:`list_hook` / :meth:`map_hook` are the unpacker hooks, so the
    count stops a hostile message while it is being decoded.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def _charge(self, value: Any) -> Any:
        self.used += 1
        if self.used > self.limit:
            raise ProtocolError(f"message decodes into more than {self.limit} arrays and maps")
        return value

    list_hook = _charge
    map_hook = _charge


@dataclass(slots=True)
class ForwardMessage:
    tag: str
    events: Iterable[tuple[float, Any]]
    option: dict[str, Any] = field(default_factory=dict)
    #: A (Compressed)PackedForward message's entries, decompressed (None in the other modes).
    packed: bytes | None = None

    @property
    def chunk_id(self) -> Any:
        """The ``chunk`` option (ack requested) or None."""
        return self.option.get("chunk")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EVENT_TIME_CODE and len(data) == 8:
        sec, nsec = struct.unpack(">II", data)
        return sec + nsec / 1e9
    return msgpack.ExtType(code, data)


def new_unpacker(max_size: int, budget: Budget | None = None) -> msgpack.Unpacker:
    """A streaming decoder whose buffer never grows past ``max_size``; ``budget`` counts its containers."""
    hooks = {} if budget is None else {"list_hook": budget.list_hook, "object_hook": budget.map_hook}
    return msgpack.Unpacker(
        max_buffer_size=max_size, raw=False, unicode_errors="surrogateescape", ext_hook=_ext_hook,
        strict_map_key=False, **hooks,
    )


def _time(value: Any) -> float:
    if isinstance(value, (list, tuple)) and value:
        value = value[0]  # Fluent Bit >= 2.1 sends [[time, metadata], record]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"event time must be an integer or EventTime, got {type(value).__name__}")
    return value


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):  # old clients pack the entries as str
        return value.encode("utf-8", "surrogateescape")
    raise ProtocolError(f"packed entries must be bin or str, got {type(value).__name__}")


def _gunzip(data: bytes, max_size: int) -> bytes:
    """Decompress concatenated gzip members, refusing output past ``max_size``."""
    out = bytearray()
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            out += d.decompress(data, max_size + 1 - len(out))
        except zlib.error as exc:
            raise ProtocolError(f"bad gzip data: {exc}") from None
        if len(out) > max_size:
            raise ProtocolError(f"compressed entries expand past {max_size} bytes")
        if not d.eof:
            raise ProtocolError("truncated gzip data")
        data = d.unused_data
    return bytes(out)


def _entries(blob: bytes, max_size: int, budget: Budget) -> Iterator[tuple[float, Any]]:
    unpacker = new_unpacker(max(max_size, len(blob)), budget)
    unpacker.feed(blob)
    del blob
    try:
        for entry in unpacker:
            if not isinstance(entry, (list, tuple)) or len(entry) < 2:
                raise ProtocolError("packed entry is not [time, record]")
            yield _time(entry[0]), entry[1]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: a map keyed by an array
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"bad packed entries: {exc}") from None


def decode_message(obj: Any, max_size: int, budget: Budget) -> ForwardMessage:
    """One top-level msgpack object -> a :class:`ForwardMessage`; raises ProtocolError.

    ``budget`` is the one that counted ``obj``'s containers; packed entries are charged to it as the
    returned message's ``events`` are iterated (which may raise ProtocolError).
    """
    if not isinstance(obj, (list, tuple)) or len(obj) < 2:
        raise ProtocolError("expected an array [tag, ...]")
    tag = obj[0]
    if not isinstance(tag, str):
        raise ProtocolError(f"tag must be a string, got {type(tag).__name__}")
    second = obj[1]
    if isinstance(second, (list, tuple)):                       # Forward mode
        option = obj[2] if len(obj) > 2 else {}
        for entry in second:
            if not isinstance(entry, (list, tuple)) or len(entry) < 2:
                raise ProtocolError("forward entry is not [time, record]")
            _time(entry[0])
        events: Iterable[tuple[float, Any]] = ((_time(t), record) for t, record, *_ in second)
    elif isinstance(second, (bytes, str)):                      # (Compressed)PackedForward
        option = obj[2] if len(obj) > 2 else {}
        if not isinstance(option, dict):
            raise ProtocolError("option must be a map")
        blob = _as_bytes(second)
        compressed = option.get("compressed")
        if compressed == "gzip":
            blob = _gunzip(blob, max_size)
        elif compressed not in (None, "text"):
            raise ProtocolError(f"unknown compression {compressed!r}")
        return ForwardMessage(tag, _entries(blob, max_size, budget), option, packed=blob)
    else:                                                       # Message mode
        if len(obj) < 3:
            raise ProtocolError("message mode needs [tag, time, record]")
        option = obj[3] if len(obj) > 3 else {}
        events = [(_time(second), obj[2])]
    if not isinstance(option, dict):
        raise ProtocolError("option must be a map")
    return ForwardMessage(tag, events, option)


def packed_records(msg: ForwardMessage, time_key: str | None, budget: Budget) -> RecordBlock | None:
    """A PackedForward message's events as the JSON lines :func:`event_json` makes, each with its
    newline, in one block: the compiled transcoder (``_packed.c``) does
    the whole message at once.  None where it was not built, for the other modes, and for a message it
    does not take (malformed, over the container budget, or holding values only the Python path
    encodes): then ``msg.events`` gives the events (or raises the ProtocolError)."""
    if msg.packed is None or transcode is None:
        return None
    out = transcode(msg.packed, time_key, budget.limit - budget.used)
    return None if out is None else RecordBlock(*out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, msgpack.ExtType):
        return {"ext": value.code, "data": value.data.hex()}
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


def event_json(time: float, record: Any, time_key: str | None) -> bytes:
    """One event as a JSON object line (no newline): the record, plus its time under ``time_key``.

    A record that is not a map is wrapped as ``{"message": record}``; a record
    that already has ``time_key`` keeps its own value.  Strings keep their
    original bytes (invalid UTF-8 included).  orjson encodes what it can (about
    ten times faster than the standard library; NaN and infinities become
    ``null``, as JSON has no such numbers); what it refuses (invalid UTF-8
    kept as surrogates, keys that are not strings, integers past 64 bits) is
    encoded by the standard library as before.
    """
    if not isinstance(record, dict):
        record = {"message": record}
    if time_key and time_key not in record:
        record = {time_key: time, **record}
    try:
        return orjson.dumps(record, default=_jsonable)
    except TypeError:
        pass
    try:
        text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_jsonable)
    except (TypeError, ValueError):
        text = json.dumps(_jsonable(record), ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def ack(chunk_id: Any) -> bytes:
    return msgpack.packb({"ack": chunk_id}, use_bin_type=True)


# -- the shared_key handshake ---------------------------------------------------------------------

#: Largest PING accepted (the only message read before the handshake succeeded).
MAX_PING_SIZE = 4096


def _raw(value: Any) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def key_digest(salt: Any, hostname: Any, nonce: bytes, shared_key: str) -> str:
    """``sha512_hex(salt + hostname + nonce + shared_key)``, the proof both sides send."""
    h = hashlib.sha512()
    for part in (salt, hostname, nonce, shared_key):
        h.update(_raw(part))
    return h.hexdigest()


def helo(nonce: bytes) -> bytes:
    """The server's greeting (no user/password authentication: ``auth`` is empty)."""
    return msgpack.packb(["HELO", {"nonce": nonce, "auth": b"", "keepalive": True}], use_bin_type=True)


def check_ping(ping: Any, nonce: bytes, shared_key: str) -> tuple[str, bytes | str | None]:
    """Check a PING: ``("", salt)`` when it proves ``shared_key``, else ``(reason, salt or None)``."""
    if not isinstance(ping, (list, tuple)) or len(ping) < 4 or ping[0] != "PING":
        return "expected PING", None
    hostname, salt, digest = ping[1], ping[2], ping[3]
    if not all(isinstance(v, (str, bytes)) for v in (hostname, salt, digest)):
        return "malformed PING", None
    expected = key_digest(salt, hostname, nonce, shared_key)
    if not hmac.compare_digest(_raw(digest), expected.encode()):
        return "shared_key mismatch", salt
    return "", salt


def pong(ok: bool, reason: str, hostname: str, salt: Any, nonce: bytes, shared_key: str) -> bytes:
    """The server's answer; its digest proves the server knows the key too (empty when the PING was bad)."""
    digest = key_digest(salt, hostname, nonce, shared_key) if salt is not None else ""
    return msgpack.packb(["PONG", ok, reason, hostname, digest], use_bin_type=True)
