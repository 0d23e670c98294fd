"""Moving chunks between components: sources into channels, channels into sinks.

``ChannelOutput`` is what a source delivers to: it commits each batch to every
channel of the source (fan-out) and blocks while a channel is full.
``SinkRunner`` is the thread behind a sink: take a batch in a transaction,
deliver it, commit; on failure roll back and retry with capped, jittered
exponential backoff (tenacity), honouring a next hop's TRY_LATER delay.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from tenacity import RetryCallState, Retrying, retry_if_not_exception_type, wait_exponential_jitter

from logflume.channel import Channel
from logflume.chunk import Chunk, runs_within
from logflume.component import Component
from logflume.errors import ChannelClosed, ChannelFull, TryLater
from logflume.interceptor import InterceptorChain
from logflume.selector import ChannelSelector
from logflume.sink import Sink
from logflume.source import SourceOutput
from logflume.topology import ComponentSpec

log = logging.getLogger("logflume.runner")


class ChannelOutput(SourceOutput):
    """Commit every delivered batch to each of the source's channels.

    A channel that fails to write (a full disk under a file channel) is retried
    with backoff until it works or the channel closes: the source simply waits,
    as it does for a full channel, and keeps its checkpoint where it was.
    A chunk the channel refuses outright (``ValueError``) fails the delivery.
    """

    def __init__(self, channels: Sequence[Channel], put_timeout: float | None = None,
                 retry_initial: float = 0.1, retry_max: float = 10.0, tap: Component | None = None) -> None:
        self.channels = list(channels)
        self.source = tap  # whose ``tap`` sees every delivered batch (``logflume tap``)
        self.put_timeout = put_timeout
        self._wait = wait_exponential_jitter(multiplier=retry_initial, max=retry_max, jitter=retry_initial)

    def deliver(self, chunks: Sequence[Chunk], timeout: float | None = None) -> None:
        if not chunks:
            return
        put_timeout = self.put_timeout if timeout is None else timeout
        if self.source is not None and self.source.tap is not None:
            self.source.tap.offer(chunks)
        for channel in self.channels:
            retrying = Retrying(
                retry=retry_if_not_exception_type((ChannelClosed, ChannelFull, ValueError)),
                wait=self._wait,
                before_sleep=lambda state, ch=channel: log.warning(
                    "channel %s: put failed (%s); retrying", ch.name, state.outcome.exception()),
                reraise=True,
            )
            # A transaction's own uncommitted puts hold capacity: one bigger than the whole
            # channel would wait forever for room only its own commit could free.
            for group in runs_within(chunks, channel.config.capacity):
                for attempt in retrying:
                    with attempt:
                        with channel.transaction() as tx:
                            for chunk in group:
                                tx.put(chunk, timeout=put_timeout)
                if channel.tap is not None:
                    channel.tap.offer(group)


class SelectingOutput(SourceOutput):
    """Commit each chunk to the channels its selector names (``logflume/selector.py``).

    A batch is split per channel, keeping the chunks' order; required channels
    get their part first, each through a :class:`ChannelOutput` (so with the
    same blocking and retries as the plain path), then optional channels, whose
    failure is counted and logged but does not fail the delivery.
    """

    def __init__(self, selector: ChannelSelector, channels: dict[str, Channel], source: Component) -> None:
        self.selector = selector
        self.source = source
        self.outputs = {name: ChannelOutput([ch]) for name, ch in channels.items()}
        self.channels = channels
        self.optional_timeout = selector.values.optional_timeout
        self.dropped = source.metrics.counter("optional_dropped", "Chunks an optional channel did not take")

    def deliver(self, chunks: Sequence[Chunk], timeout: float | None = None) -> None:
        if not chunks:
            return
        if self.source.tap is not None:
            self.source.tap.offer(chunks)
        required: dict[str, list[Chunk]] = {}
        optional: dict[str, list[Chunk]] = {}
        for chunk in chunks:
            req, opt = self.selector.select(chunk)
            for name in req:
                required.setdefault(name, []).append(chunk)
            for name in opt:
                if name not in req:
                    optional.setdefault(name, []).append(chunk)
        for name, part in required.items():
            self.outputs[name].deliver(part, timeout)
        for name, part in optional.items():
            channel = self.channels[name]
            try:
                for group in runs_within(part, channel.config.capacity):
                    with channel.transaction() as tx:
                        for chunk in group:
                            tx.put(chunk, timeout=self.optional_timeout)
                    if channel.tap is not None:
                        channel.tap.offer(group)
            except Exception as exc:  # noqa: BLE001 - an optional channel never fails the put (Flume's rule)
                self.dropped.inc(len(part))
                log.warning("source %s: optional channel %s did not take %d chunk(s): %s",
                            self.source.name, name, len(part), exc)


def source_output(spec: ComponentSpec, channels: dict[str, ComponentSpec]) -> SourceOutput:
    """What a source delivers to: its interceptor chain (if any) in front of its channels (through its selector).

    With no interceptors and no selector this is the plain :class:`ChannelOutput`, exactly as before.
    """
    output: SourceOutput
    if spec.selector is None:
        output = ChannelOutput([channels[c].component for c in spec.values.channels], tap=spec.component)
    else:
        output = SelectingOutput(ChannelSelector(spec.selector, list(spec.values.channels)),
                                 {c: channels[c].component for c in spec.values.channels}, spec.component)
    if spec.interceptors:
        chain = InterceptorChain([i.component for i in spec.interceptors], output)
        chain.start()
        output = chain
    return output


class _Stopped(Exception):
    """Raised inside the retry loop when the runner must give up (hard stop)."""


class SinkRunner:
    """One thread: channel -> sink, at-least-once, in channel order."""

    def __init__(self, sink: Sink, channel: Channel) -> None:
        self.sink = sink
        self.channel = channel
        self.cfg = sink.config
        self._stop_now = threading.Event()   # hard stop: abandon (roll back) and exit
        self._draining = threading.Event()   # soft stop: exit once the channel is empty
        self._thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)
        self._expo = wait_exponential_jitter(
            multiplier=self.cfg.retry_initial, max=self.cfg.retry_max, jitter=self.cfg.retry_initial
        )
        self.idle = threading.Event()
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def drain(self) -> None:
        self._draining.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_now.set()
        self._thread.join(timeout)

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _wait(self, state: RetryCallState) -> float:
        delay = self._expo(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TryLater):
            delay = max(delay, min(exc.delay, self.cfg.retry_max))
        return delay

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.failures += 1
        self.sink.metrics.retries.inc()
        level = logging.INFO if isinstance(exc, TryLater) else logging.WARNING
        log.log(level, "sink %s: delivery failed (%s); retrying in %.2fs",
                self.sink.name, exc, state.next_action.sleep if state.next_action else 0)

    def _run(self) -> None:
        while not self._stop_now.is_set():
            retrying = Retrying(
                retry=retry_if_not_exception_type((_Stopped, ChannelClosed)),
                wait=self._wait,
                sleep=self._sleep,
                before_sleep=self._log_retry,
                reraise=True,
            )
            try:
                for attempt in retrying:
                    with attempt:
                        moved = self._move_one_batch()
            except (_Stopped, ChannelClosed):
                return
            except Exception:  # pragma: no cover - tenacity reraises only on stop
                log.exception("sink runner %s crashed", self.sink.name)
                return
            if not moved and self._draining.is_set():
                return

    def _sleep(self, seconds: float) -> None:
        if self._stop_now.wait(seconds):
            raise _Stopped()

    def _move_one_batch(self) -> bool:
        """Take up to a batch, deliver it, commit. Returns False if the channel was empty."""
        if self._stop_now.is_set():
            raise _Stopped()
        tx = self.channel.transaction()
        batch: list[Chunk] = []
        size = 0
        try:
            first = tx.take(timeout=0.05 if self._draining.is_set() else 0.5)
            if first is None:
                tx.commit()
                self.idle.set()
                return False
            self.idle.clear()
            batch.append(first)
            size = len(first)
            deadline = time.monotonic() + self.cfg.batch_timeout
            while size < self.cfg.batch_bytes and len(batch) < self.cfg.batch_chunks:
                chunk = tx.take(timeout=max(0.0, deadline - time.monotonic()))
                if chunk is None:
                    break
                batch.append(chunk)
                size += len(chunk)
            self.sink.deliver(batch)
            tx.commit()
        except BaseException:
            tx.rollback()
            raise
        if self.sink.tap is not None:
            self.sink.tap.offer(batch)
        if not self.sink.counts_output:
            self.sink.metrics.chunks_out.inc(len(batch))
            self.sink.metrics.bytes_out.inc(size)
        return True
