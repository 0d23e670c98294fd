"""Fixtures: an in-process logflume wire server on loopback whose deliver() records what it got."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from logflume.chunk import Chunk
from logflume.wire import TcpServer, WireEndpoint
from logflume.wire.server import Endpoint


class Recorder:
    """A deliver() callback that keeps copies of what it was given (views die when deliver returns)."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []
        self.lock = threading.Lock()
        self.hook: Callable[[Sequence[Chunk]], None] | None = None

    def __call__(self, chunks: Sequence[Chunk]) -> None:
        if self.hook is not None:
            self.hook(chunks)
        with self.lock:
            for c in chunks:
                c.data = bytes(c.data)
                self.chunks.append(c)


@pytest.fixture
def serving():
    """Factory: ``serving(make_endpoint, **server_kwargs)`` -> (server, recorder): a TcpServer on loopback
    around ``make_endpoint(recorder)``; stopped at teardown."""
    servers: list[TcpServer] = []

    def make(make_endpoint: Callable[[Recorder], Endpoint], **server_kw) -> tuple[TcpServer, Recorder]:
        rec = Recorder()
        srv = TcpServer(make_endpoint(rec), "127.0.0.1", 0, **server_kw)
        srv.start()
        servers.append(srv)
        return srv, rec

    yield make
    for s in servers:
        s.stop(timeout=2.0)


@pytest.fixture
def wire_server(serving):
    """Factory: ``wire_server(**endpoint_kwargs)`` -> (server, recorder) for the logflume wire endpoint."""

    def make(ssl_context=None, max_connections: int = 64, **kw) -> tuple[TcpServer, Recorder]:
        kw.setdefault("server_name", "test-collector")
        kw.setdefault("max_frame_size", 256 * 1024 * 1024)
        kw.setdefault("idle_timeout", 30.0)
        return serving(lambda rec: WireEndpoint(rec, **kw), ssl_context=ssl_context, max_connections=max_connections)

    return make
