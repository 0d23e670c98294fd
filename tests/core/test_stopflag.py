"""``logflume.stopflag``: a stop that a ``select`` sees, and a socketserver loop that ends on it at once."""

from __future__ import annotations

import http.server
import select
import threading
import urllib.request

from logflume.stopflag import StopFlag, serve_until


def test_the_flag_is_readable_exactly_while_set():
    flag = StopFlag()
    assert select.select([flag], [], [], 0)[0] == []
    flag.set()
    flag.set()  # twice: still one flag
    assert flag.is_set()
    assert select.select([flag], [], [], 0)[0] == [flag]
    flag.clear()
    assert not flag.is_set()
    assert select.select([flag], [], [], 0)[0] == []


def test_a_select_waiting_on_the_flag_wakes_when_another_thread_sets_it():
    flag = StopFlag()
    threading.Timer(0.2, flag.set).start()
    ready, _, _ = select.select([flag], [], [], 60)
    assert ready == [flag]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args) -> None:
        pass


def test_serve_until_serves_and_returns_once_the_flag_is_set():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    flag = StopFlag()
    t = threading.Thread(target=serve_until, args=(server, flag), daemon=True)
    t.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/", timeout=10) as r:
            assert r.read() == b"hello"
        flag.set()
        t.join(20)  # the loop selects without a timeout: only the flag can end it
        assert not t.is_alive()
    finally:
        server.server_close()
