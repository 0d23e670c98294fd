"""Interceptor: rewrites a source's chunks on their way into its channels (Flume's interceptors).

Interceptors are chained per source (``sources.NAME.interceptors``, a list run
in order) and see each batch the source delivers, before the channel selector
and the channels.  ``intercept(chunks)`` returns the chunks to deliver.

Contract, so that delivery stays exact (``(source, stream, epoch, [seq_id -
len(data), seq_id))`` names the bytes of every chunk, and archive can drop
duplicates by that range and prove overlaps identical):

* A **chunk-level** interceptor (``record_level = False``) changes metadata
  only: tags, datatype, timestamp.  Never ``source``, ``stream``, ``epoch``,
  ``seq_id``, ``record_ends`` or the bytes.
* A **record-level** interceptor (``record_level = True``) may drop records or
  rewrite bytes, and then keeps two rules:

  1. *Dropping* keeps the source's numbering: what is left of a chunk is
     delivered as one chunk per run of consecutive kept records
     (:func:`keep_spans`), each a zero-copy slice of the source's bytes at its
     own stream range.  A kept byte is the byte the source read at that
     offset, so a re-read with other chunk boundaries, or the same range kept
     by another config, overlaps with identical bytes.
  2. *Rewriting* keeps every byte's offset (same length: a mask replaces, it
     never shortens) and moves the chunk to a derived numbering space,
     :func:`derive_epoch` ``(epoch, transform_id())``: rewritten bytes never
     share a range with the source's own bytes or another config's rewrite.

  Both must be deterministic: the same bytes and settings give the same
  output, so a re-read after a crash reproduces what was sent before.

A chunk handed to ``intercept`` belongs to the chain: an interceptor may set
its fields, but must not mutate its ``tags`` dict or its buffer in place
(sources share them between chunks): assign new ones.  Returning an empty
list is fine: the source's checkpoint then moves past bytes that were
deliberately not delivered.  ``start()`` is called before the first batch;
interceptors run in the source's thread and should hold no other resources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from logflume.chunk import FLAG_PARTIAL, FLAG_SPLIT, MAX_EPOCH_LEN, Chunk
from logflume.component import Component
from logflume.settings import render_settings
from logflume.source import SourceOutput

#: Flags that describe a chunk's last record; a piece that does not keep it loses them.
_TAIL_FLAGS = frozenset({FLAG_SPLIT, FLAG_PARTIAL})

#: Separates a source epoch from the transforms applied to its bytes.
EPOCH_TRANSFORM_SEP = "~"


class Interceptor(Component):
    kind: ClassVar[str] = "interceptor"
    #: True when the interceptor drops records or rewrites bytes (see the module contract).
    record_level: ClassVar[bool] = False
    settings: ClassVar[dict] = {}

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        """The chunks to deliver in place of ``chunks``, in stream order."""
        raise NotImplementedError

    def transform_id(self) -> str:
        """Short, stable name of what this interceptor does to bytes: type and settings, hashed.

        Two agents with the same settings derive the same epoch; any change of settings a new one.
        """
        doc = {"type": type(self).__qualname__, "settings": render_settings(self.schema(), self.config)}
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
        return digest[:12]


def derive_epoch(epoch: str, transform: str) -> str:
    """The numbering space of ``epoch``'s bytes as rewritten by ``transform`` (same offsets, other bytes).

    ``EPOCH~transform``; an epoch that would grow past the bound is replaced by its hash first.
    """
    derived = f"{epoch}{EPOCH_TRANSFORM_SEP}{transform}"
    if len(derived) > MAX_EPOCH_LEN:
        derived = f"{hashlib.sha256(epoch.encode()).hexdigest()[:32]}{EPOCH_TRANSFORM_SEP}{transform}"
    return derived


def check_tags(tags: dict[str, str]) -> None:
    """Raise ValueError when collectors would refuse chunks carrying ``tags`` (checked at config time:
    a refused chunk would stall its channel)."""
    problem = Chunk("x", "x", "Raw", 0, "", b"", tags=tags).metadata_error()
    if problem:
        raise ValueError(f"tags collectors refuse: {problem}")


def with_tags(chunk: Chunk, tags: dict[str, str], preserve_existing: bool = False) -> None:
    """Set ``tags`` on ``chunk`` (a new dict: the old one may be shared); keep existing values if asked."""
    if preserve_existing:
        merged = {**tags, **chunk.tags}
    else:
        merged = {**chunk.tags, **tags}
    chunk.tags = merged


def sub_chunk(chunk: Chunk, lo: int, hi: int) -> Chunk:
    """The part of ``chunk`` holding its bytes ``[lo, hi)`` (relative), sharing the buffer, at its own range.

    ``record_ends`` inside are re-based (the piece's end becomes one when the chunk had explicit
    ends); split/partial flags stay only with the chunk's last byte.
    """
    n = len(chunk.data)
    if not 0 <= lo < hi <= n:
        raise ValueError(f"[{lo}, {hi}) is not inside a chunk of {n} bytes")
    if lo == 0 and hi == n:
        return chunk
    record_ends = None
    if chunk.record_ends is not None:
        record_ends = [r - lo for r in chunk.record_ends if lo < r <= hi]
        if not record_ends or record_ends[-1] != hi - lo:
            record_ends.append(hi - lo)
    flags = chunk.flags
    flags = (list(flags) if hi == n else [f for f in flags if f not in _TAIL_FLAGS]) if flags else []
    # built directly: dataclasses.replace costs more than the rest when a filter leaves many short runs
    return Chunk(chunk.source, chunk.stream, chunk.datatype, chunk.seq_id - n + hi, chunk.epoch,
                 memoryview(chunk.data)[lo:hi], dict(chunk.tags), record_ends, chunk.timestamp, flags, chunk.sender)


def keep_spans(chunk: Chunk, spans: Sequence[tuple[int, int]]) -> list[Chunk]:
    """One chunk per run of adjacent ``spans`` (relative, sorted, disjoint record spans) that are kept.

    Adjacent spans merge, so a chunk that keeps everything comes back whole (the same object).
    """
    runs: list[list[int]] = []
    for lo, hi in spans:
        if runs and runs[-1][1] == lo:
            runs[-1][1] = hi
        elif hi > lo:
            runs.append([lo, hi])
    if len(runs) == 1 and runs[0][0] == 0 and runs[0][1] == len(chunk.data):
        return [chunk]
    return [sub_chunk(chunk, lo, hi) for lo, hi in runs]


class InterceptorChain(SourceOutput):
    """A source's output that runs its interceptors, in order, before the next output (selector/channels)."""

    def __init__(self, interceptors: Sequence[Interceptor], inner: SourceOutput) -> None:
        self.interceptors = list(interceptors)
        self.inner = inner

    def start(self) -> None:
        for icp in self.interceptors:
            icp.start()

    def deliver(self, chunks: Sequence[Chunk], timeout: float | None = None) -> None:
        for icp in self.interceptors:
            if not chunks:
                return
            n_in = len(chunks)
            chunks = icp.intercept(chunks)
            icp.metrics.chunks_in.inc(n_in)
            icp.metrics.chunks_out.inc(len(chunks))
        if chunks:
            self.inner.deliver(chunks, timeout)

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": i.name, "type": type(i).__name__} for i in self.interceptors]
