"""The one TCP server behind every listener (collector endpoints, syslog, forward, http, Scribe and Flume sources).

One thread per connection, and never more than ``max_connections`` of them:
a connection past that, or past ``max_connections_per_peer`` from one
address, is closed at once instead of spawning a thread.  Every connection
must show it is alive before it holds a slot for long: the TLS handshake,
and on plain TCP the first byte, must arrive within ``handshake_timeout``
(protocols where the server speaks first, such as Forward's HELO, take the
deadline over).  After that the :class:`Endpoint` bounds what the peer may do
(frame deadlines, idle timeouts) on its :class:`Connection`, which carries the
peer address and, with mutual TLS, the verified client certificate's name.

A reset, timed-out or half-handshaken connection is logged in one line, never
with a traceback.  Graceful stop (SIGTERM): ``stop_accepting()`` closes the
listener; idle connections notice the stop flag and close; a connection in the
middle of a frame finishes it (and its ack) first.  ``join(timeout)`` waits.
The flag is a :class:`~logflume.stopflag.StopFlag`: the accept loop and every
idle wait select on it beside their socket, so a stop is seen at once.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from logflume.errors import ChannelClosed, ConfigError, StartupError
from logflume.settings import Bool, Duration, Int, Obj, Optional, Setting, Str
from logflume.stopflag import StopFlag
from logflume.wire.connection import Connection
from logflume.wire.tls import server_context

#: How often the accept loop and idle waits look at the stop flag.
POLL = 0.2
#: At most one "refused" warning per listener this often (a flood must not flood the log).
REFUSAL_LOG_INTERVAL = 10.0


class Endpoint(Protocol):
    """The protocol spoken on a connection; ``serve`` returns when the connection should close."""

    name: str

    def serve(self, conn: Connection, stopping: threading.Event) -> None: ...


class ConnectionClosing(Exception):
    """Raised inside an endpoint to drop its connection quietly (shutdown, idle peer)."""


class TcpServer:
    def __init__(
        self,
        endpoint: Endpoint,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 1024,
        max_connections_per_peer: int | None = None,
        handshake_timeout: float = 10.0,
        wait_first_byte: bool = True,
        on_refuse: Callable[[], None] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        """``wait_first_byte=False`` for protocols where the server greets first (the endpoint then
        enforces ``handshake_timeout`` itself); ``on_refuse`` counts refused connections."""
        self.endpoint = endpoint
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer or max_connections
        self.handshake_timeout = handshake_timeout
        self.wait_first_byte = wait_first_byte
        self.on_refuse = on_refuse
        self.log = log or logging.getLogger(f"logflume.wire.{endpoint.name}")
        self.stopping = StopFlag()
        self.refused = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[threading.Thread, Connection | socket.socket] = {}
        self._per_peer: dict[str, int] = {}
        self._lock = threading.Lock()
        self._refusals_unlogged = 0
        self._last_refusal_log = 0.0

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port): the real port when configured with port 0."""
        assert self._listener is not None, "server not started"
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> None:
        """Bind and listen (StartupError when the address is unusable), then accept in a thread."""
        sock = None
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(min(self.max_connections, 4096))
        except OSError as exc:
            if sock is not None:
                sock.close()
            reason = exc.strerror or exc
            raise StartupError(f"{self.endpoint.name}: cannot listen on {self.host}:{self.port}: {reason}") from None
        sock.settimeout(POLL)
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
                ready, _, _ = select.select([self._listener, self.stopping], [], [], POLL)
                if self._listener not in ready:
                    continue
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                self.stopping.wait(POLL)  # EMFILE and the like: back off instead of spinning
                continue
            host = addr[0]
            with self._lock:
                if len(self._conns) >= self.max_connections:
                    why = f"max_connections ({self.max_connections}) reached"
                elif self._per_peer.get(host, 0) >= self.max_connections_per_peer:
                    why = f"max_connections_per_peer ({self.max_connections_per_peer}) reached"
                else:
                    why = ""
                    t = threading.Thread(target=self._handle, args=(sock, host, addr[1]),
                                         name=f"conn-{self.endpoint.name}", daemon=True)
                    self._conns[t] = sock
                    self._per_peer[host] = self._per_peer.get(host, 0) + 1
            if why:
                self._refuse(sock, host, why)
                continue
            t.start()

    def _refuse(self, sock: socket.socket, host: str, why: str) -> None:
        self.refused += 1
        if self.on_refuse is not None:
            self.on_refuse()
        sock.close()
        self._refusals_unlogged += 1
        now = time.monotonic()
        if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL:
            self.log.warning("%s: refused %d connection(s), the last from %s: %s",
                             self.endpoint.name, self._refusals_unlogged, host, why)
            self._refusals_unlogged = 0
            self._last_refusal_log = now

    def _handle(self, sock: socket.socket, host: str, port: int) -> None:
        me = threading.current_thread()
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        conn: Connection | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            deadline = time.monotonic() + self.handshake_timeout
            client_name = None
            if self.ssl_context is not None:
                try:
                    sock = self._tls_handshake(sock, deadline)
                except (ssl.SSLError, OSError) as exc:
                    self.log.warning("%s: TLS handshake with %s failed: %s", self.endpoint.name, peer, exc)
                    return
                with self._lock:
                    self._conns[me] = sock
                client_name = _certificate_name(sock.getpeercert())
            conn = Connection(sock, peer, peer_host=host, client_name=client_name)
            with self._lock:
                self._conns[me] = conn
            if self.wait_first_byte and not conn.wait_readable(max(0.0, deadline - time.monotonic()), self.stopping):
                if not self.stopping.is_set():
                    self.log.info("%s: closing %s: nothing sent within handshake_timeout (%.0fs)",
                                  self.endpoint.name, peer, self.handshake_timeout)
                return
            self.endpoint.serve(conn, self.stopping)
        except (ConnectionClosing, ChannelClosed):
            pass
        except (ssl.SSLError, OSError) as exc:  # resets, timeouts, failed handshakes: one line, no traceback
            self.log.info("%s: connection from %s closed: %s", self.endpoint.name, peer, exc)
        except Exception:
            self.log.exception("%s: connection from %s failed", self.endpoint.name, peer)
        finally:
            if conn is not None:
                conn.close()
            else:
                _close(sock)
            with self._lock:
                self._conns.pop(me, None)
                left = self._per_peer.get(host, 1) - 1
                if left:
                    self._per_peer[host] = left
                else:
                    self._per_peer.pop(host, None)

    def _tls_handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        """The whole handshake within the deadline (a trickling client cannot stretch it)."""
        assert self.ssl_context is not None
        sock.setblocking(False)
        tls = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    wait = ([tls], [])
                except ssl.SSLWantWriteError:
                    wait = ([], [tls])
                left = deadline - time.monotonic()
                if left <= 0 or self.stopping.is_set():
                    raise TimeoutError(f"TLS handshake not complete within {self.handshake_timeout:.0f}s")
                select.select([*wait[0], self.stopping], wait[1], [], min(left, POLL))
        except BaseException:
            _close(tls)
            raise
        tls.setblocking(True)
        return tls

    @property
    def connections(self) -> int:
        """Connections being served now."""
        with self._lock:
            return len(self._conns)

    def stop_accepting(self) -> None:
        """Close the listener and tell connections to finish their current frame and close."""
        self.stopping.set()
        if self._accept_thread is not None and self._accept_thread is not threading.current_thread():
            self._accept_thread.join(timeout=5)
        if self._listener is not None:
            _close(self._listener)

    def join(self, timeout: float) -> bool:
        """Wait for every connection to end; True if they all did within ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = [t for t in self._conns if t is not threading.current_thread()]
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
                conns = list(self._conns.values())
            for c in conns:
                if isinstance(c, Connection):
                    c.close()
                else:
                    _close(c)
            self.join(2.0)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _certificate_name(cert: dict[str, Any] | None) -> str | None:
    """The verified client certificate's commonName (else its first DNS subjectAltName); None without one."""
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            return value
    return None


def receive(conn: Connection, buf: bytearray | memoryview, stopping: threading.Event, idle_timeout: float) -> int:
    """Read what is there into ``buf`` (0 at EOF), for endpoints that read a stream rather than frames.

    Raises :class:`ConnectionClosing` on shutdown and when the peer sends
    nothing for ``idle_timeout`` (also inside a TLS record it started).
    """
    if not conn.wait_readable(idle_timeout, stopping):
        raise ConnectionClosing("shutting down" if stopping.is_set() else "idle timeout")
    conn.sock.settimeout(idle_timeout)
    try:
        return conn.sock.recv_into(buf)
    except TimeoutError:
        raise ConnectionClosing("idle timeout") from None


# -- the listener settings every network source shares ------------------------------------------

TLS_SETTINGS: dict[str, Setting] = {
    "cert": Setting(Str(), doc="PEM server certificate (chain) file"),
    "key": Setting(Optional(Str()), None, "PEM private key of the certificate (default: in the cert file)"),
    "client_ca": Setting(Optional(Str()), None, "PEM CA bundle that signs client certificates (mutual TLS)"),
    "require_client_cert": Setting(Bool(), False, "Refuse clients without a certificate signed by client_ca"),
}

LISTENER_SETTINGS: dict[str, Setting] = {
    "tls": Setting(Optional(Obj(TLS_SETTINGS)), None, "TLS on the listener (null: plain TCP)"),
    "max_connections": Setting(Int(min=1), 256, "Connections served at once; more are closed at once"),
    "max_connections_per_peer": Setting(Int(min=1), 64, "Connections served at once from one address"),
    "handshake_timeout": Setting(Duration(), "10s",
                                 "A new connection must finish its TLS handshake / send its first bytes this soon"),
    "idle_timeout": Setting(Duration(), "5m", "Close a connection that sends nothing for this long"),
    "insecure": Setting(Bool(), False, "Allow listening beyond loopback without authentication"),
}


def tls_context(tls: Any, file: str | None, where: str) -> ssl.SSLContext | None:
    """The server context of a parsed ``tls`` block (None when TLS is off)."""
    if tls is None:
        return None
    if tls.require_client_cert and not tls.client_ca:
        raise ConfigError(file, f"{where}.tls.client_ca", "required when require_client_cert is true")
    return server_context(tls.cert, tls.key or tls.cert, tls.client_ca, tls.require_client_cert)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def client_cert_required(tls: Any) -> bool:
    return tls is not None and bool(tls.require_client_cert)


def refuse_exposed(host: str, *, authenticated: bool, insecure: bool, file: str | None, key: str, auth: str) -> None:
    """Refuse (ConfigError on ``key``) a listener beyond loopback that authenticates nobody, unless ``insecure``."""
    if authenticated or insecure or is_loopback(host):
        return
    raise ConfigError(file, key, f"listens on {host}, beyond loopback, without authentication: "
                                 f"set {auth}, or insecure: true to accept anyone who can connect")


def server_for(source: Any, endpoint: Endpoint, address: tuple[str, int], **kw: Any) -> TcpServer:
    """A :class:`TcpServer` configured from a source's :data:`LISTENER_SETTINGS`."""
    c = source.config
    return TcpServer(
        endpoint, address[0], address[1], ssl_context=tls_context(c.tls, source.context.config_file,
                                                                  f"sources.{source.name}"),
        max_connections=c.max_connections, max_connections_per_peer=c.max_connections_per_peer,
        handshake_timeout=c.handshake_timeout, log=source.log, **kw,
    )
