"""HICC's HTTP server: the pages, the stylesheet, and a token check when one is configured.

A token is accepted as ``Authorization: Bearer TOKEN``, as the ``hicc_token``
cookie, or once as ``?token=TOKEN`` (which sets the cookie and redirects, so
the token does not stay in the address bar).  Connections are bounded and
slow clients time out, as on the daemons' status endpoint.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from hicc import pages
from hicc.jobs import JobsView
from hicc.poller import Poller
from hicc.records import Query, RecordSearch, SearchError
from hicc.timeseries import TimeSeries
from logflume import __version__
from logflume.settings import Invalid, parse_duration
from logflume.stopflag import StopFlag, serve_until

log = logging.getLogger("logflume.hicc")

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 15.0
STATIC = {"hicc.css": "text/css; charset=utf-8"}


class Console:
    """What the pages read: the poller's targets, the time series, job outputs and record search."""

    def __init__(self, config: Any, poller: Poller, series: TimeSeries) -> None:
        self.config = config
        self.poller = poller
        self.series = series
        self.jobs = JobsView(config.store, config.archive, config.demux)
        self.search = RecordSearch(config.demux, config.search_timeout) if config.demux else None


def _int(query: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return max(1, int(query.get(key, [default])[0]))
    except ValueError:
        return default


class _Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT
    server_version = f"logflume-hicc/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def _authorized(self, query: dict[str, list[str]]) -> bool | None:
        """True, False, or None when a redirect setting the cookie was sent."""
        token = self.server.console.config.token
        if not token:
            return True
        given = ""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        elif "hicc_token" in (cookie := SimpleCookie(self.headers.get("Cookie", ""))):
            given = cookie["hicc_token"].value
        elif "token" in query:
            if hmac.compare_digest(query["token"][0].encode(), token.encode()):
                rest = {k: v[0] for k, v in query.items() if k != "token"}
                self.send_response(HTTPStatus.SEE_OTHER)
                self.send_header("Location", urlsplit(self.path).path + ("?" + urlencode(rest) if rest else ""))
                secure = "; Secure" if self.server.console.config.tls is not None else ""
                self.send_header("Set-Cookie", f"hicc_token={token}; HttpOnly; SameSite=Strict; Path=/{secure}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
        return hmac.compare_digest(given.encode(), token.encode())

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        url = urlsplit(self.path)
        query = parse_qs(url.query, max_num_fields=16)
        allowed = self._authorized(query)
        if allowed is None:
            return
        if not allowed:
            self._send(HTTPStatus.UNAUTHORIZED, b"a token is needed: open the console with ?token=...",
                       "text/plain; charset=utf-8")
            return
        c = self.server.console
        cfg = c.config
        refresh = cfg.refresh
        t0 = time.monotonic()
        path = url.path
        if path == "/":
            try:
                window = parse_duration(query.get("window", ["1h"])[0])
            except (Invalid, ValueError):
                window = 3600.0
            window = min(max(window, 60.0), cfg.retention)
            html = pages.pipeline_page(c.poller.snapshot("agent"), c.poller.snapshot("collector"),
                                       c.series.series(None, window), _int(query, "page", 1), cfg.page_size,
                                       window, refresh)
        elif path == "/streams":
            html = pages.streams_page(c.poller.snapshot("agent"), query.get("agent", [""])[0],
                                      query.get("q", [""])[0], _int(query, "page", 1), cfg.page_size, refresh)
        elif path == "/store":
            html = pages.store_page(c.poller.snapshot("collector"), c.jobs.get(), refresh)
        elif path == "/records":
            html = self._records(query)
        elif path == "/api/targets":
            body = [{"role": t.role, "address": t.address, "name": t.name, "state": t.state, "error": t.error,
                     "last_ok": t.last_ok, "reasons": t.ready.get("reasons", [])} for t in c.poller.snapshot()]
            self._send(HTTPStatus.OK, json.dumps(body).encode(), "application/json")
            return
        elif path.startswith("/static/") and path[8:] in STATIC:
            data = resources.files("hicc").joinpath("static", path[8:]).read_bytes()
            self._send(HTTPStatus.OK, data, STATIC[path[8:]], cache=True)
            return
        else:
            self._send(HTTPStatus.NOT_FOUND, pages.layout("Not found", path, "<p>No such page.</p>").encode(),
                       "text/html; charset=utf-8")
            return
        self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")
        log.debug("%s rendered in %.1f ms", path, (time.monotonic() - t0) * 1000)

    def _records(self, query: dict[str, list[str]]) -> str:
        c = self.server.console
        page = _int(query, "page", 1)
        q = Query(query.get("datatype", [""])[0], query.get("from", [""])[0], query.get("to", [""])[0],
                  query.get("source", [""])[0], query.get("text", [""])[0], (page - 1) * 50, 50)
        if c.search is None:
            return pages.records_page(q, [], None, "No demux output configured (hicc.demux).", page)
        missing = c.search.available()
        if missing:
            return pages.records_page(q, [], None, missing, page)
        result, error = None, ""
        if any(k in query for k in ("datatype", "from", "to", "source", "text")):
            try:
                result = c.search.search(q)
            except SearchError as exc:
                error = str(exc)
        return pages.records_page(q, c.search.datatypes(), result, error, page)

    def _send(self, code: HTTPStatus, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)


class ConsoleServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, console: Console, ssl_context: Any = None) -> None:
        self.console = console
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        host, port = console.config.listen
        super().__init__((host, port), _Handler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._stop = StopFlag()
        self._worker = threading.Thread(target=serve_until, args=(self, self._stop), name="hicc-http", daemon=True)

    def start(self) -> None:
        self._worker.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if hasattr(request, "do_handshake"):
                request.settimeout(REQUEST_TIMEOUT)
                request.do_handshake()
            super().process_request_thread(request, client_address)
        except OSError:
            self.shutdown_request(request)
        finally:
            self._slots.release()

    def close(self) -> None:
        self._stop.set()
        if self._worker.is_alive():
            self._worker.join(timeout=10)
        self.server_close()
