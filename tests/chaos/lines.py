"""The line format writers append and the verifier checks: who wrote it, its number, a CRC of the whole line.

``<file-id> <seq:09d> <crc32:08x> <payload>\\n`` -- the payload is any bytes
but ``\\n`` (some lines binary, some many KiB), so a line found in the archive
names the file and number it was written as and proves its bytes intact.
"""

from __future__ import annotations

import random
import zlib

_PRINTABLE = bytes(range(32, 127))
_BINARY = bytes(b for b in range(256) if b != 10)


def make_line(file_id: str, seq: int, rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.001:
        size = rng.randint(16 << 10, 64 << 10)
    elif roll < 0.016:
        size = rng.randint(2 << 10, 8 << 10)
    else:
        size = rng.randint(10, 200)
    alphabet = _BINARY if rng.random() < 0.1 else _PRINTABLE
    payload = bytes(rng.choices(alphabet, k=size)) if size < 4096 else rng.randbytes(size).replace(b"\n", b"N")
    head = f"{file_id} {seq:09d} ".encode()
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + f"{crc:08x} ".encode() + payload + b"\n"


def parse_line(line: bytes) -> tuple[str, int] | None:
    """(file id, seq) of an intact line (without its ``\\n``); None when the bytes are not a whole line we wrote."""
    parts = line.split(b" ", 3)
    if len(parts) != 4 or len(parts[1]) != 9 or len(parts[2]) != 8:
        return None
    try:
        seq = int(parts[1])
        crc = int(parts[2], 16)
        fid = parts[0].decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    head = parts[0] + b" " + parts[1] + b" "
    if zlib.crc32(parts[3], zlib.crc32(head)) != crc:
        return None
    return fid, seq
