"""One accepted or dialled socket with deadlines: exact reads into caller buffers, no hidden copies.

Every read of a frame has a deadline computed when the frame starts
(``idle_timeout`` plus its size at ``MIN_RATE``), so a peer that trickles one
byte a second is dropped instead of holding a thread forever.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time

#: Slowest transfer rate a peer may sustain inside one frame before it is cut off (bytes per second).
MIN_RATE = 256 * 1024
#: Buffers per sendmsg call (Linux's UIO_MAXIOV).
IOV_MAX = 1024
#: How often an idle wait looks at the stop flag.
POLL_INTERVAL = 0.2


class PeerClosed(ConnectionError):
    """The peer closed the connection (cleanly, between or inside frames)."""


class Timeout(TimeoutError):
    """A frame did not arrive in time (a slow or stuck peer)."""


def frame_deadline(nbytes: int, idle_timeout: float) -> float:
    """Monotonic time by which a frame of ``nbytes`` must be fully read."""
    return time.monotonic() + idle_timeout + nbytes / MIN_RATE


class Connection:
    """A stream socket (plain or TLS) with exact, deadline-bound reads."""

    def __init__(self, sock: socket.socket, peer: str, *, peer_host: str | None = None,
                 client_name: str | None = None) -> None:
        self.sock = sock
        self.peer = peer
        #: the peer's IP address (``peer`` is ``host:port``, for logs)
        self.peer_host = peer_host if peer_host is not None else peer.rpartition(":")[0]
        #: the verified TLS client certificate's name (commonName), None without one
        self.client_name = client_name
        self._closed = False

    def wait_readable(self, timeout: float, stopping: threading.Event | None = None) -> bool:
        """True once a byte can be read; False after ``timeout`` or once ``stopping`` is set."""
        end = time.monotonic() + timeout
        while True:
            if stopping is not None and stopping.is_set():
                return False  # shutting down: start no new frame
            if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
                return True
            left = end - time.monotonic()
            waits = [self.sock, stopping] if hasattr(stopping, "fileno") else [self.sock]  # a StopFlag wakes it
            try:
                ready, _, _ = select.select(waits, [], [], min(max(left, 0.0), POLL_INTERVAL))
            except (OSError, ValueError):
                return False
            if self.sock in ready:
                return True
            if left <= 0 or (stopping is not None and stopping.is_set()):
                return False

    def read_into(self, view: memoryview, deadline: float) -> None:
        """Fill ``view`` exactly, or raise PeerClosed / Timeout."""
        got, n = 0, len(view)
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"{self.peer}: frame not complete in time ({got} of {n} bytes)")
            self.sock.settimeout(left)
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                raise Timeout(f"{self.peer}: frame not complete in time ({got} of {n} bytes)") from None
            if k == 0:
                raise PeerClosed(f"{self.peer}: connection closed after {got} of {n} bytes")
            got += k

    def read_exact(self, n: int, deadline: float) -> bytearray:
        buf = bytearray(n)
        self.read_into(memoryview(buf), deadline)
        return buf

    def sendall(self, data: bytes | bytearray | memoryview, timeout: float | None) -> None:
        self.sock.settimeout(timeout)
        self.sock.sendall(data)

    def send_parts(self, parts: list, timeout: float | None) -> None:
        """Send buffers in order without joining them: ``sendmsg`` gathers up to IOV_MAX per call (plain TCP)."""
        if isinstance(self.sock, ssl.SSLSocket):
            for part in parts:
                self.sendall(part, timeout)
            return
        self.sock.settimeout(timeout)
        views = [memoryview(p).cast("B") for p in parts if len(p)]
        i = 0
        while i < len(views):
            group = views[i:i + IOV_MAX]
            sent = self.sock.sendmsg(group)
            for v in group:  # skip what went out, keep the rest of a partly sent buffer
                if sent >= len(v):
                    sent -= len(v)
                    i += 1
                else:
                    views[i] = v[sent:]
                    break

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
