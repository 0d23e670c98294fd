"""``logflume cat FILE...``: print the contents of SequenceFiles.

The default output mirrors ``hadoop fs -text`` (key TAB value per record, but
BytesWritable printed raw rather than as hex); ``--json`` gives one JSON object
per record and ``--records`` prints the log records inside sink-file chunks.
Every whole record before a torn or corrupt spot is printed; then one line on
stderr says where the file broke, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import fsspec

from .errors import SequenceFileError
from .reader import SequenceFileReader
from .writables import BYTES_WRITABLE, LONG_WRITABLE, NULL_WRITABLE, TEXT

PROG = "logflume cat"


def _plain(kind: str, payload: memoryview) -> bytes:
    if kind == LONG_WRITABLE:
        return str(int.from_bytes(payload, "big", signed=True)).encode()
    if kind == NULL_WRITABLE:
        return b"(null)"
    return bytes(payload)  # Text bytes as stored, BytesWritable raw


def _json(kind: str, payload: memoryview) -> Any:
    if kind == TEXT:
        return str(payload, "utf-8", "replace")
    if kind == LONG_WRITABLE:
        return int.from_bytes(payload, "big", signed=True)
    if kind == NULL_WRITABLE:
        return None
    assert kind == BYTES_WRITABLE
    return base64.b64encode(payload).decode("ascii")


def _lines(reader: SequenceFileReader, mode: str) -> Iterator[bytes | memoryview]:
    kk, vk = reader.header.key_class, reader.header.value_class
    if mode == "records":
        for chunk in reader.iter_chunks():
            yield from chunk.records()
    elif mode == "json":
        for k, v in reader.iter_raw():
            obj = {"key": _json(kk, k), "value": _json(vk, v)}
            yield json.dumps(obj, ensure_ascii=False).encode() + b"\n"
    else:
        for k, v in reader.iter_raw():
            yield _plain(kk, k) + b"\t" + _plain(vk, v) + b"\n"


def _cat_one(path: str, mode: str, out: IO[bytes]) -> str | None:
    """Print one file; return the error line (without prog prefix) or None."""
    try:
        with fsspec.open(path, "rb") as f:
            reader = SequenceFileReader(f)
            if mode == "records" and (reader.header.key_class, reader.header.value_class) != (
                TEXT,
                BYTES_WRITABLE,
            ):
                return f"{path}: not a sink file (key/value classes are not Text/BytesWritable)"
            for piece in _lines(reader, mode):
                out.write(piece)
    except SequenceFileError as exc:
        where = f" (at byte {exc.offset})" if exc.offset is not None else ""
        return f"{path}: {exc.reason}{where}"
    except FileNotFoundError:
        return f"{path}: no such file"
    except (IsADirectoryError, PermissionError) as exc:
        return f"{path}: {exc.strerror or exc}"
    except OSError as exc:
        return f"{path}: {exc}"
    finally:
        out.flush()
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Print the records of Hadoop SequenceFiles (local paths or fsspec URLs)."
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="path or fsspec URL of a SequenceFile")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="one JSON object per record: {key, value}")
    mode.add_argument(
        "--records", action="store_true", help="sink files: print the log records inside each chunk"
    )
    args = parser.parse_args(argv)
    chosen = "json" if args.json else "records" if args.records else "text"
    out = sys.stdout.buffer
    status = 0
    try:
        for path in args.files:
            error = _cat_one(path, chosen, out)
            if error is not None:
                print(f"{PROG}: {error}", file=sys.stderr)
                status = 1
    except BrokenPipeError:  # `logflume cat x.seq | head`
        return 0
    return status
