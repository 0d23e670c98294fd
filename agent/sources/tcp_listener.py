"""A TCP (optionally TLS) listener that runs one thread per connection.

Shared by the syslog and forward sources.  A connection's thread reads,
parses and delivers; when delivery blocks on a full channel the thread stops
reading, the kernel's receive window closes and the sender slows down (TCP
back-pressure).  Connections past ``max_connections`` are closed at once,
sockets wake every ``poll`` seconds to notice shutdown, and a peer silent for
``idle_timeout`` is dropped, so hostile or stuck senders cost one bounded
thread each.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable

from logflume.errors import ChannelClosed, StartupError

Handler = Callable[[socket.socket, str], None]


class ConnectionClosing(Exception):
    """Raised inside a handler to drop its connection (protocol error, shutdown)."""


class TcpListener:
    def __init__(
        self,
        address: tuple[str, int],
        handler: Handler,
        *,
        name: str,
        max_connections: int = 256,
        idle_timeout: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
        poll: float = 0.25,
        on_reject: Callable[[], None] | None = None,
    ) -> None:
        self.requested = address
        self.handler = handler
        self.name = name
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        self.poll = poll
        self.on_reject = on_reject
        self.stopping = threading.Event()
        self.log = logging.getLogger(f"logflume.source.{name}")
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[threading.Thread, socket.socket] = {}
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the real port when 0 was asked for)."""
        if self._sock is None:
            return self.requested
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def start(self) -> None:
        host, port = self.requested
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or exc
            raise StartupError(f"source {self.name}: cannot listen on tcp {host}:{port}: {reason}") from None
        sock.settimeout(self.poll)
        self._sock = sock
        self.stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name=f"source-{self.name}-accept", daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self.stopping.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    return
                self.log.exception("accept failed")
                self.stopping.wait(self.poll)
                continue
            with self._lock:
                full = len(self._conns) >= self.max_connections
            if full:
                self.log.warning("closing connection from %s: max_connections (%d) reached",
                                 peer[0], self.max_connections)
                if self.on_reject:
                    self.on_reject()
                conn.close()
                continue
            t = threading.Thread(target=self._serve, args=(conn, peer[0]), name=f"source-{self.name}-conn", daemon=True)
            with self._lock:
                self._conns[t] = conn
            t.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        me = threading.current_thread()
        try:
            conn.settimeout(self.poll)
            if self.ssl_context is not None:
                conn.settimeout(max(self.poll, 10.0))
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(self.poll)
                with self._lock:
                    self._conns[me] = conn
            self.handler(conn, peer)
        except (ConnectionClosing, ChannelClosed):
            pass
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            self.log.info("connection from %s closed: %s", peer, exc)
        except Exception:
            self.log.exception("connection from %s failed", peer)
        finally:
            with self._lock:
                self._conns.pop(me, None)
            try:
                conn.close()
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._lock:
            threads = list(self._conns)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


def recv_loop(conn: socket.socket, buf: bytearray, stopping: threading.Event, idle_timeout: float,
              poll: float) -> Callable[[], int]:
    """A reader for a handler: returns bytes read into ``buf`` (0 at EOF), waiting out poll timeouts.

    Raises :class:`ConnectionClosing` on shutdown or after ``idle_timeout`` of silence.
    """
    def read() -> int:
        idle_since = time.monotonic()
        while True:
            if stopping.is_set():
                raise ConnectionClosing("shutting down")
            try:
                return conn.recv_into(buf)
            except (TimeoutError, ssl.SSLWantReadError):
                if time.monotonic() - idle_since >= idle_timeout:
                    raise ConnectionClosing("idle timeout") from None

    return read
