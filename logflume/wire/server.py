"""A threaded TCP server for the wire endpoints: connection limit, TLS, idle timeout, graceful stop.

One thread per connection: a collector serves tens to hundreds of agents,
each sending large frames that are read with blocking ``recv_into``.  An
:class:`Endpoint` implements the protocol on one :class:`Connection`.

Graceful stop (SIGTERM): ``stop_accepting()`` closes the listener; idle
connections notice the stop flag between frames and close; a connection in
the middle of a frame finishes it (and its ack) first.  ``join(timeout)``
waits for that.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Protocol

from logflume.errors import StartupError
from logflume.wire.connection import Connection


class Endpoint(Protocol):
    """The protocol spoken on a connection; ``serve`` returns when the connection should close."""

    name: str

    def serve(self, conn: Connection, stopping: threading.Event) -> None: ...


class TcpServer:
    def __init__(
        self,
        endpoint: Endpoint,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1024,
        handshake_timeout: float = 10.0,
        log: logging.Logger | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.handshake_timeout = handshake_timeout
        self.log = log or logging.getLogger(f"logflume.wire.{endpoint.name}")
        self.stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[threading.Thread, Connection | None] = {}
        self._lock = threading.Lock()
        self.refused = 0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when configured with port 0."""
        assert self._listener is not None, "server not started"
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Bind and listen (StartupError when the address is unusable), then accept in a thread."""
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family = infos[0][0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(min(self.max_connections, 4096))
        except OSError as exc:
            reason = exc.strerror or exc
            raise StartupError(f"{self.endpoint.name}: cannot listen on {self.host}:{self.port}: {reason}") from None
        sock.settimeout(0.2)
        self._listener = sock
        self.stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"accept-{self.endpoint.name}", daemon=True,
        )
        self._accept_thread.start()
        tls = " (TLS)" if self.ssl_context else ""
        self.log.info("%s listening on %s:%d%s", self.endpoint.name, *self.address, tls)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self.stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                continue
            peer = f"{addr[0]}:{addr[1]}"
            with self._lock:
                self._conns = {t: c for t, c in self._conns.items() if t.is_alive()}
                full = len(self._conns) >= self.max_connections
                if not full:
                    t = threading.Thread(target=self._handle, args=(sock, peer), name=f"conn-{peer}", daemon=True)
                    self._conns[t] = None
            if full:
                self.refused += 1
                self.log.warning("%s: refusing connection from %s: max_connections %d reached",
                                 self.endpoint.name, peer, self.max_connections)
                sock.close()
                continue
            t.start()

    def _handle(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_context is not None:
                sock.settimeout(self.handshake_timeout)
                try:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.log.warning("%s: TLS handshake with %s failed: %s", self.endpoint.name, peer, exc)
                    sock.close()
                    return
            conn = Connection(sock, peer)
            with self._lock:
                self._conns[threading.current_thread()] = conn
            try:
                self.endpoint.serve(conn, self.stopping)
            except Exception:
                self.log.exception("%s: connection from %s failed", self.endpoint.name, peer)
            finally:
                conn.close()
        finally:
            with self._lock:
                self._conns.pop(threading.current_thread(), None)

    def connections(self) -> int:
        with self._lock:
            return sum(1 for t in self._conns if t.is_alive())

    def stop_accepting(self) -> None:
        """Close the listener and tell connections to finish their current frame and close."""
        self.stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()

    def join(self, timeout: float) -> bool:
        """Wait for every connection to end; True if they all did within ``timeout``."""
        import time

        end = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._conns if t.is_alive()]
            if not threads:
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            threads[0].join(min(left, 0.5))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight frames finish for up to ``timeout``, then cut the rest."""
        self.stop_accepting()
        if not self.join(timeout):
            with self._lock:
                conns = [c for c in self._conns.values() if c is not None]
            for c in conns:
                c.close()
            self.join(2.0)
