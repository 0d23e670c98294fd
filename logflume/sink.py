"""Sink: delivers chunks to the next hop (a collector, a file, a store).

Contract: ``deliver(chunks)`` returns only once the next hop has accepted the
whole batch durably (for a store: flushed as its ``sync`` policy says).  It
raises on any failure (``TryLater`` when the hop asks to be called later);
the runtime then rolls the channel transaction back and retries with backoff,
so a sink may see the same chunks again and must not mind.  Sinks are shared:
an agent runs them behind a channel, a collector runs its store as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.component import Component
from logflume.settings import Duration, Int, Setting, Size, Str


class Sink(Component):
    kind: ClassVar[str] = "sink"
    #: True for a sink that counts its own ``chunks_out``/``bytes_out`` (a store, which a collector drives
    #: with no runner); for every other sink the agent's runner (or its sink group) counts what it acked.
    counts_output: ClassVar[bool] = False
    settings: ClassVar[dict[str, Setting]] = {
        "channel": Setting(Str(), doc="Channel this sink takes from (ignored when the sink is a collector's store)"),
        "batch_bytes": Setting(Size(min=1), "8MiB", "Deliver once a batch holds this many bytes"),
        "batch_chunks": Setting(Int(min=1), 1000, "At most this many chunks per delivery"),
        "batch_timeout": Setting(Duration(), "0s", "Wait this long for more chunks before delivering a short batch"),
        "retry_initial": Setting(Duration(), "100ms", "First backoff after a failed delivery"),
        "retry_max": Setting(Duration(), "30s", "Cap of the exponential backoff (with jitter)"),
    }

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything delivered so far durable (called before shutdown)."""
