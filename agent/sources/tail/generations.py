"""Generations read before and not being read now, found again by content (inode as a hint).

A generation is a file's content between two truncations: what an epoch
numbers.  When the file that held it is let go (rotated away and read to its
end, closed, or truncated by copytruncate), its committed position stays here
so that the same bytes, found again at any path or inode, resume where they
were, under the stream and epoch they were first read under, instead of being
read again from 0: after a restart, after a device number change, and in the
copy that copytruncate leaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from agent.sources.tail.checkpoint import Position
from agent.sources.tail.identity import fingerprint

T = TypeVar("T")


class FingerprintIndex(Generic[T]):
    """Items by fingerprint, looked up with the leading bytes of a file (any fingerprint length)."""

    def __init__(self) -> None:
        self._by_len: dict[int, dict[str, list[T]]] = {}

    def add(self, fp_len: int, fp: str, item: T) -> None:
        if fp_len > 0:  # an empty file's fingerprint would match every file
            self._by_len.setdefault(fp_len, {}).setdefault(fp, []).append(item)

    def discard(self, fp_len: int, fp: str, item: T) -> None:
        table = self._by_len.get(fp_len)
        items = table.get(fp) if table else None
        if items and item in items:
            items.remove(item)
            if not items:
                del table[fp]
                if not table:
                    del self._by_len[fp_len]

    def find(self, head: bytes) -> list[T]:
        """Items whose fingerprinted bytes ``head`` starts with."""
        found: list[T] = []
        for n, table in self._by_len.items():
            if n <= len(head):
                found += table.get(fingerprint(head[:n]), ())
        return found


class Generations:
    """The remembered generations of one source, by epoch, by inode hint and by fingerprint."""

    def __init__(self, positions: Iterable[Position] = ()) -> None:
        self._by_epoch: dict[str, Position] = {}
        self._by_key: dict[tuple[int, int], list[str]] = {}
        self._by_content: FingerprintIndex[str] = FingerprintIndex()
        for pos in positions:
            self.add(pos)

    def __len__(self) -> int:
        return len(self._by_epoch)

    def __contains__(self, epoch: str) -> bool:
        return epoch in self._by_epoch

    def __iter__(self) -> Iterator[Position]:
        return iter(list(self._by_epoch.values()))

    def add(self, pos: Position) -> None:
        """Remember a generation (replacing what was remembered under its epoch)."""
        self.pop(pos.epoch)
        self._by_epoch[pos.epoch] = pos
        if not pos.ended:
            self._by_key.setdefault(pos.key, []).append(pos.epoch)
        self._by_content.add(pos.fp_len, pos.fp, pos.epoch)

    def pop(self, epoch: str) -> Position | None:
        pos = self._by_epoch.pop(epoch, None)
        if pos is None:
            return None
        epochs = self._by_key.get(pos.key)
        if epochs and epoch in epochs:
            epochs.remove(epoch)
            if not epochs:
                del self._by_key[pos.key]
        self._by_content.discard(pos.fp_len, pos.fp, epoch)
        return pos

    def at_inode(self, key: tuple[int, int]) -> list[Position]:
        """Generations last read at this device and inode and not ended there."""
        return [self._by_epoch[e] for e in self._by_key.get(key, ())]

    def with_head(self, head: bytes) -> list[Position]:
        """Generations whose fingerprinted first bytes ``head`` starts with."""
        return [self._by_epoch[e] for e in self._by_content.find(head)]
