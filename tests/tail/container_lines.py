"""Writing container runtime log files the way the kubelet's runtimes do, and reading records back as messages.

``lines(fmt, stream, message)`` splits a message into the runtime's 16 KiB
pieces (``P`` ... ``F`` for CRI, ``log`` without ``\\n`` for Docker json-file).
``messages(record)`` parses a record independently of the agent's code: it
joins each stream's pieces and says which streams were left open.
"""

from __future__ import annotations

import datetime
import json

PIECE = 16 * 1024


def _time() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond * 1000:09d}Z"


def lines(fmt: str, stream: str, message: bytes, piece: int = PIECE) -> list[bytes]:
    """The lines a runtime writes for one output line ``message`` (without its newline)."""
    parts = [message[i:i + piece] for i in range(0, len(message), piece)] or [b""]
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if fmt == "cri":
            out.append(f"{_time()} {stream} {'F' if last else 'P'} ".encode() + part + b"\n")
        else:
            text = part.decode() + ("\n" if last else "")
            out.append(json.dumps({"log": text, "stream": stream, "time": _time()},
                                  separators=(",", ":")).encode() + b"\n")
    return out


def parse_line(fmt: str, line: bytes) -> tuple[str, bool, bytes]:
    """(stream, last piece?, text) of one line (newline included)."""
    assert line.endswith(b"\n"), line[:80]
    if fmt == "cri":
        _time_field, stream, tag, text = line[:-1].split(b" ", 3)
        return stream.decode(), tag.split(b":")[0] == b"F", text
    obj = json.loads(line)
    text = obj["log"].encode()
    return obj["stream"], text.endswith(b"\n"), text.removesuffix(b"\n")


def messages(fmt: str, record: bytes) -> tuple[list[tuple[str, bytes]], set[str]]:
    """The whole messages in a record, in the order they were completed, and the streams left open."""
    done: list[tuple[str, bytes]] = []
    open_: dict[str, list[bytes]] = {}
    for line in record.splitlines(keepends=True):
        stream, last, text = parse_line(fmt, line)
        open_.setdefault(stream, []).append(text)
        if last:
            done.append((stream, b"".join(open_.pop(stream))))
    return done, set(open_)
