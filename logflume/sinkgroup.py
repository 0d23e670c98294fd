"""Sink groups: several sinks behind one channel, as one sink (Flume's sink processors).

A group takes from the channel its sinks name and hands each batch to one of
them.  ``failover``: the sink of highest ``priority`` that is not penalized;
a sink that fails is penalized for 1 s, doubling with each failure in a row up
to ``penalty`` (Flume's maxpenalty), and the same batch goes to the next one.
``load_balance``: sinks in turn (``round_robin``) or at random, skipping those
in backoff (1 s doubling up to ``max_backoff``; ``backoff: false`` retries
them at once); a failed batch goes to the next sink.  Only when every sink
failed does the group fail: the runtime rolls the channel back and retries
with its own backoff, so nothing is lost and a batch may arrive twice
(archive removes it).  The group runs in one thread: one batch in flight.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from logflume.chunk import Chunk
from logflume.errors import TryLater
from logflume.settings import Bool, Duration, Enum, Int, ListOf, MapOf, Setting, Str
from logflume.sink import Sink

#: First penalty/backoff of a failed sink, doubled per failure in a row (Flume's 1 s).
BASE_PENALTY = 1.0


class _Member:
    __slots__ = ("sink", "priority", "failures", "until")

    def __init__(self, sink: Sink, priority: int) -> None:
        self.sink = sink
        self.priority = priority
        self.failures = 0
        self.until = 0.0  # monotonic time the sink is penalized until


class SinkGroup(Sink):
    """Delivers each batch through one of its sinks: failover by priority, or load balance (see module doc)."""

    settings: ClassVar[dict[str, Setting]] = {
        "sinks": Setting(ListOf(Str(), min_items=2), doc="Names of the sinks in the group (they share one channel)"),
        "processor": Setting(Enum("failover", "load_balance"), doc="How a sink is chosen for each batch"),
        "priority": Setting(MapOf(Int()), {}, "failover: sink name -> priority, highest first "
                            "(default: the order of sinks, first highest)"),
        "penalty": Setting(Duration(), "30s", "failover: longest time a failed sink is left out (Flume's maxpenalty)"),
        "selector": Setting(Enum("round_robin", "random"), "round_robin", "load_balance: order of sinks"),
        "backoff": Setting(Bool(), True, "load_balance: leave a failed sink out for a while (exponential)"),
        "max_backoff": Setting(Duration(), "30s", "load_balance: longest backoff of a failed sink"),
    }

    def configure(self) -> None:
        cfg = self.config
        if len(set(cfg.sinks)) != len(cfg.sinks):
            raise ValueError("sinks: a sink is named twice")
        unknown = sorted(set(cfg.priority) - set(cfg.sinks))
        if unknown:
            raise ValueError(f"priority names {unknown[0]!r}, which is not a sink of this group")
        self.members: list[_Member] = []
        self._lock = threading.Lock()
        self._next = 0
        self._random = random.Random()
        self.switches = self.metrics.counter("sink_failures", "Deliveries a group's sink failed (the batch went on)")

    def attach(self, sinks: Sequence[Sink], keys: Sequence[str] | None = None) -> None:
        """Set the member sinks (built by the topology, in ``sinks`` order); ``keys`` are the names ``priority``
        gives them by, when not their sink names (a collector's members are named by their key path)."""
        n = len(sinks)
        keys = [s.name for s in sinks] if keys is None else keys
        self.members = [_Member(s, self.config.priority.get(k, n - i))
                        for i, (s, k) in enumerate(zip(sinks, keys, strict=True))]

    # -- lifecycle: the members' own ----------------------------------------------------------

    def start(self) -> None:
        for m in self.members:
            m.sink.start()

    def stop(self) -> None:
        for m in self.members:
            try:
                m.sink.stop()
            except Exception:
                self.log.exception("sink %s: stop failed", m.sink.name)

    def flush(self) -> None:
        for m in self.members:
            try:
                m.sink.flush()
            except Exception:
                self.log.exception("sink %s: flush failed", m.sink.name)

    def writes(self) -> list[str]:
        return [w for m in self.members for w in m.sink.writes()]

    # -- choosing ----------------------------------------------------------------------------

    def _order(self, now: float) -> list[_Member]:
        """Members to try for this batch, in order; penalized ones are left out."""
        live = [m for m in self.members if m.until <= now]
        if self.config.processor == "failover":
            return sorted(live, key=lambda m: -m.priority)
        if self.config.selector == "random":
            self._random.shuffle(live)
            return live
        with self._lock:
            start = self._next % len(self.members)
            self._next += 1
        ring = self.members[start:] + self.members[:start]
        return [m for m in ring if m.until <= now]

    def _penalize(self, m: _Member, now: float) -> None:
        m.failures += 1
        if self.config.processor == "failover":
            cap = self.config.penalty
        elif self.config.backoff:
            cap = self.config.max_backoff
        else:
            return
        m.until = now + min(cap, BASE_PENALTY * (2 ** min(m.failures - 1, 30)))

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        now = time.monotonic()
        order = self._order(now)
        if not order:
            wait = min(m.until for m in self.members) - now
            raise TryLater(f"every sink of group {self.name} is penalized", max(wait, 0.05))
        errors = []
        for m in order:
            try:
                m.sink.deliver(chunks)
            except Exception as exc:  # noqa: BLE001 - any failure moves the batch to the next sink
                self._penalize(m, time.monotonic())
                self.switches.inc()
                errors.append(f"{m.sink.name}: {exc}")
                self.log.warning("sink group %s: sink %s failed (%s); %s", self.name, m.sink.name, exc,
                                 "trying the next" if m is not order[-1] else "no sink left")
                continue
            m.failures = 0
            m.until = 0.0
            if not m.sink.counts_output:  # the runner sees only the group
                m.sink.metrics.chunks_out.inc(len(chunks))
                m.sink.metrics.bytes_out.inc(sum(len(c) for c in chunks))
            return
        raise RuntimeError(f"every sink of group {self.name} failed: " + "; ".join(errors))

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {"processor": self.config.processor, "sinks": [
            {"name": m.sink.name, "priority": m.priority, "failures": m.failures,
             "penalized_for": round(max(0.0, m.until - now), 3)} for m in self.members]}

    def describe(self) -> dict[str, Any]:
        return {"type": "SinkGroup", "processor": self.config.processor, "sinks": [m.sink.name for m in self.members]}
