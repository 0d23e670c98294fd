"""The position file: where each tailed file's committed data ends, written atomically.

One JSON document per source (``positions.json`` in the source's state
directory).  It is replaced whole: written to a temporary file, fsynced,
renamed over the old one and the directory fsynced, so a crash at any moment
leaves either the old or the new positions, never a mix or a torn file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from logflume.errors import StartupError

FORMAT_VERSION = 1


@dataclass
class Position:
    """One file's committed position (see docs/tail.md, "Checkpoint format")."""

    dev: int
    ino: int
    fp_len: int
    fp: str
    epoch: str
    stream: str  # the path the file had when first seen: the chunks' stream
    path: str  # where the file was last seen
    offset: int  # bytes of this epoch committed to the channel
    seq_id: int  # seq_id of the last committed chunk (== offset)
    truncations: int
    last_seen: float  # wall-clock time the file was last seen (for forget_after)

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)


class PositionFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[Position]:
        """Positions from the last save; none when there is no file yet. A damaged file stops the start."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            doc = json.loads(raw)
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}, expected {FORMAT_VERSION}")
            return [Position(**entry) for entry in doc["files"]]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StartupError(
                f"position file {self.path} is damaged ({exc}); move it away to restart "
                f"(files are then read again from where start_at says)"
            ) from None

    def save(self, positions: list[Position]) -> None:
        """Replace the file atomically (write, fsync, rename, fsync directory)."""
        doc = {"version": FORMAT_VERSION, "files": [asdict(p) for p in positions]}
        data = json.dumps(doc, separators=(",", ":")).encode()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
