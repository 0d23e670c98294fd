"""The collector: many agents in, one store out, an ack only once a batch is durable.

The receiving side of ``sinks/to_collector.py``: the daemon's listeners (each a
generic ``logflume.wire.server.TcpServer``), the store writer and the store.

Every listener (logflume, and optionally Scribe and Flume) hands its chunks to
:class:`StoreWriter`, the single thread that calls the store (the Scribe way:
the store need not be thread-safe).  Batches that arrive while the store is
busy are written together in one ``store.deliver`` (group commit: one sync for
many agents).  A listener answers OK only once its batch's outcome is known;
a logflume connection reads the sender's next frame meanwhile (``submit``
returns a future; logflume/wire/endpoint.py).  While more than ``max_pending_bytes`` wait for the store, new
batches are answered TRY_LATER: the agents keep them in their channels.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager

from collector.config import CollectorConfig
from collector.routing import StoreRouter
from logflume.chunk import Chunk
from logflume.errors import StartupError, TryLater
from logflume.sink import Sink
from logflume.wire.buffers import BufferPool
from logflume.wire.endpoint import WireEndpoint
from logflume.wire.flume import FlumeEndpoint
from logflume.wire.scribe import ScribeEndpoint
from logflume.wire.server import TcpServer
from logflume.wire.tls import server_context

log = logging.getLogger("logflume.collector")

#: Delay suggested with TRY_LATER when the store queue is full.
TRY_LATER_DELAY = 1.0
#: Most bytes the writer hands the store in one group-committed call.
GROUP_BYTES = 64 * 1024 * 1024

#: Called on the writer thread with a batch once it is stored.
Stored = Callable[[Sequence[Chunk]], None]


class StoreWriter:
    """Serializes calls to the store; ``deliver`` blocks until the batch is durable (or raises)."""

    def __init__(self, store: Sink | StoreRouter, max_pending_bytes: int, metrics=None, *,
                 max_pending_bytes_per_peer: int | None = None) -> None:
        self.store = store
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_bytes_per_peer = max_pending_bytes_per_peer or max_pending_bytes
        self.pending_bytes = 0
        self._pending_by_peer: dict[str, int] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[list[Chunk], int, Future, Stored | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._metrics = metrics
        self.try_laters = 0

    def start(self) -> None:
        self._thread.start()

    @contextmanager
    def reserve(self, nbytes: int, peer: str = "") -> Iterator[None]:
        """Admit ``nbytes`` towards the store for ``peer``, or raise TryLater while too much is pending.

        A batch is always admitted when nothing is pending, so one batch larger
        than ``max_pending_bytes`` still gets through.  One peer (an identity,
        or an address when there are no credentials) may hold at most
        ``max_pending_bytes_per_peer`` (again: always one batch), so a peer that
        announces big batches and stalls cannot hold all of the capacity.
        """
        with self._lock:
            mine = self._pending_by_peer.get(peer, 0)
            if self.pending_bytes and self.pending_bytes + nbytes > self.max_pending_bytes:
                reason = f"store behind: {self.pending_bytes} bytes pending"
            elif mine and mine + nbytes > self.max_pending_bytes_per_peer:
                reason = f"{mine} bytes of this sender already pending"
            else:
                reason = ""
            if reason:
                self.try_laters += 1
                if self._metrics is not None:
                    self._metrics.counter("try_later", "Batches answered TRY_LATER (store behind)").inc()
                raise TryLater(reason, TRY_LATER_DELAY)
            self.pending_bytes += nbytes
            self._pending_by_peer[peer] = mine + nbytes
        try:
            yield
        finally:
            with self._lock:
                self.pending_bytes -= nbytes
                left = self._pending_by_peer[peer] - nbytes
                if left:
                    self._pending_by_peer[peer] = left
                else:
                    del self._pending_by_peer[peer]

    def submit(self, chunks: Sequence[Chunk], on_stored: Stored | None = None) -> Future[None]:
        """Hand chunks to the writer thread: the future completes once the store has them durably (or fails).

        ``on_stored(chunks)`` runs on the writer thread once they are stored, before the future
        completes; the future itself keeps no reference to the chunks, so their buffers can be
        reused as soon as the store is done with them.
        """
        fut: Future[None] = Future()
        self._queue.put((list(chunks), sum(len(c.data) for c in chunks), fut, on_stored))
        return fut

    def write(self, chunks: Sequence[Chunk]) -> None:
        """``submit`` and wait: returns once the store has the chunks durably (or raises its error)."""
        self.submit(chunks).result()

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        """``reserve`` + ``write``: for endpoints whose batch size is only known once decoded (Scribe, Flume)."""
        with self.reserve(sum(len(c.data) for c in chunks), chunks[0].sender if chunks else ""):
            self.write(chunks)

    def _run(self) -> None:
        while self._store_next_group():
            pass

    def _store_next_group(self) -> bool:
        """Store what is queued (up to GROUP_BYTES) in one call, then tell each waiter; False at the stop mark.

        The waiters learn the outcome only once nothing here refers to their batches: a chunk's view
        of a receive buffer still alive when the endpoint returns the buffer makes its pool drop it.
        """
        item = self._queue.get()
        if item is None:
            return False
        group = [item]
        size = item[1]
        while size < GROUP_BYTES:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            group.append(item)
            size += item[1]
        futures = [fut for _, _, fut, _ in group]
        error = self._store(group)
        del group, item
        for fut in futures:
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)
        return True

    def _store(self, group: list[tuple[list[Chunk], int, Future, Stored | None]]) -> BaseException | None:
        """One ``store.deliver`` for the group and each batch's ``on_stored``; the store's error, if any."""
        try:
            self.store.deliver([c for chunks, _, _, _ in group for c in chunks])
        except BaseException as exc:  # every waiter learns it
            return exc
        for batch, _, _, on_stored in group:
            if on_stored is not None:
                try:
                    on_stored(batch)
                except Exception:  # counting must not turn a stored batch into a failed one
                    log.exception("after storing a batch")
        return None

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)


class Collector:
    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        cfg = config.collector
        self.store = config.router  # the routes' stores and the default one
        self.metrics = config.context.metrics.component("collector", cfg.name)
        self.writer = StoreWriter(self.store, cfg.max_pending_bytes, self.metrics,
                                  max_pending_bytes_per_peer=cfg.max_pending_bytes_per_peer)
        self.servers: list[TcpServer] = []
        self._started_store = False

    def _count(self, chunks: Sequence[Chunk]) -> None:
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(sum(len(c.data) for c in chunks))
        tap = self.config.store.tap  # ``logflume tap HOST:PORT --component store``: what was made durable
        if tap is not None:
            tap.offer(chunks)

    def _deliver(self, chunks: Sequence[Chunk]) -> None:
        """Scribe / Flume calls: admission and write in one."""
        self.writer.deliver(chunks)
        self._count(chunks)

    def _submit(self, chunks: Sequence[Chunk]) -> Future[None]:
        """logflume batches: admitted by the endpoint through ``writer.reserve`` before their bodies were read;
        the endpoint reads the sender's next frame while the writer stores this one."""
        return self.writer.submit(chunks, self._count)

    def start(self) -> None:
        """Start store, writer and listeners; StartupError (after cleaning up) if any cannot start."""
        cfg = self.config.collector
        try:
            ssl_ctx = None
            if cfg.tls is not None:
                ssl_ctx = server_context(cfg.tls.cert, cfg.tls.key, cfg.tls.client_ca, cfg.tls.require_client_cert)
            self.store.start()
            self._started_store = True
            self.writer.start()
            auth = self.config.authenticator
            wire = WireEndpoint(
                self._submit, reserve=self.writer.reserve, pool=BufferPool(cfg.max_pending_bytes),
                server_name=cfg.name, max_frame_size=cfg.max_frame_size,
                idle_timeout=cfg.idle_timeout, frame_timeout=cfg.frame_timeout,
                progress_timeout=cfg.progress_timeout, authenticator=auth,
                log=logging.getLogger("logflume.collector.wire"),
            )
            self._add(wire, cfg.listen, ssl_ctx)
            for compat, addr, tls in ((ScribeEndpoint, cfg.scribe, cfg.scribe_tls),
                                      (FlumeEndpoint, cfg.flume, cfg.flume_tls)):
                if addr is not None:
                    self._add(compat(
                        self._deliver, source=cfg.name, max_frame_size=cfg.thrift_max_frame_size,
                        idle_timeout=cfg.idle_timeout, frame_timeout=cfg.frame_timeout, authenticator=auth,
                        log=logging.getLogger(f"logflume.collector.{compat.name}"),
                    ), addr, ssl_ctx if tls else None)
            if cfg.metrics is not None:
                try:
                    self.config.context.metrics.serve(*cfg.metrics, cfg.tap_token)
                except OSError as exc:
                    raise StartupError(f"cannot serve metrics on {cfg.metrics[0]}:{cfg.metrics[1]}: {exc}") from None
        except BaseException:
            self.stop(timeout=1.0)
            raise

    def _add(self, endpoint, addr: tuple[str, int], ssl_ctx) -> None:
        cfg = self.config.collector
        server = TcpServer(endpoint, addr[0], addr[1], ssl_context=ssl_ctx, max_connections=cfg.max_connections,
                           max_connections_per_peer=cfg.max_connections_per_peer,
                           log=logging.getLogger(f"logflume.collector.{endpoint.name}"))
        server.start()
        self.servers.append(server)

    def address(self, name: str = "logflume") -> tuple[str, int]:
        """Bound address of a listener (``logflume``, ``scribe`` or ``flume``)."""
        for s in self.servers:
            if s.endpoint.name == name:
                return s.address
        raise KeyError(name)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let in-flight batches finish and be acked, flush and close the store."""
        timeout = self.config.collector.shutdown_timeout if timeout is None else timeout
        for s in self.servers:
            s.stop_accepting()
        deadline = time.monotonic() + timeout
        for s in self.servers:
            if not s.join(max(0.0, deadline - time.monotonic())):
                log.warning("%s: connections still busy after %.0fs; closing them", s.endpoint.name, timeout)
                s.stop(0)
        self.servers.clear()
        if self._started_store:
            self.writer.stop(timeout)
            try:
                self.store.flush()
            except Exception:
                log.exception("store flush failed")
            try:
                self.store.stop()
            except Exception:
                log.exception("store stop failed")
            self._started_store = False
        self.config.context.metrics.close()
