"""A stop flag that ``select`` can wait on, and a socketserver loop that it ends at once.

Listeners wait for their sockets in ``select``; a plain ``threading.Event`` cannot
be waited on there, so they used to poll it (every 0.2 s for the TCP listeners,
every 0.5 s in socketserver's ``serve_forever``) and every stop of a daemon, and
of every server in the tests, waited out the poll.  A :class:`StopFlag` is an
Event whose ``fileno()`` turns readable when it is set.
"""

from __future__ import annotations

import os
import selectors
import socketserver
import threading
import weakref


class StopFlag(threading.Event):
    """A ``threading.Event`` that ``select`` can wait on too: once set, it reads as readable until cleared."""

    def __init__(self) -> None:
        super().__init__()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        weakref.finalize(self, _close_fds, self._r, self._w)

    def fileno(self) -> int:
        return self._r

    def set(self) -> None:
        super().set()
        try:
            os.write(self._w, b"s")
        except BlockingIOError:  # already readable
            pass

    def clear(self) -> None:
        super().clear()
        drain(self._r)


def drain(fd: int) -> None:
    """Read a non-blocking pipe empty (a wakeup pipe: what was in it does not matter, only that it was)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def serve_until(server: socketserver.BaseServer, stop: StopFlag) -> None:
    """``server.serve_forever()``, but returning as soon as ``stop`` is set (no poll interval)."""
    with selectors.DefaultSelector() as sel:
        sel.register(server, selectors.EVENT_READ)
        sel.register(stop, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in sel.select():
                if key.fileobj is server and not stop.is_set():
                    server._handle_request_noblock()  # what serve_forever calls: accept, verify, process
            server.service_actions()
