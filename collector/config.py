"""The collector's YAML: a ``collector:`` section (listeners, limits, TLS, auth), a ``store:`` sink and ``routes:``.

The schema is declared once here with ``logflume.settings`` types and used
for validation, defaults, ``logflume check`` output and docs/collector.md.
The store is any registered sink (default: the ``buffer`` store writing
SequenceFiles under ``data_dir``) or a group of stores (``collector.storegroup``);
it is configured (not started) at load time, so ``check`` catches its mistakes
too.  ``routes:`` gives chunks matching a datatype, stream (Scribe category) or
tag glob stores of their own (``collector.routing``); the ``store:`` takes the rest.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.routing import Route, StoreRouter, build_routes, build_store, check_separate
from logflume.component import Context
from logflume.config import load_yaml
from logflume.errors import ConfigError
from logflume.metrics import Metrics
from logflume.secrets import is_loopback
from logflume.settings import (
    Bool,
    Duration,
    Enum,
    HostPort,
    Int,
    ListOf,
    MapOf,
    Obj,
    Optional,
    Secret,
    Setting,
    Size,
    Str,
    Values,
    parse_settings,
    render_settings,
)
from logflume.sink import Sink
from logflume.status import tap_token_warnings
from logflume.wire.identity import Authenticator, Credential

DEFAULT_PORT = 7465

TLS_SETTINGS: dict[str, Setting] = {
    "cert": Setting(Str(), doc="PEM server certificate (chain) file"),
    "key": Setting(Str(), doc="PEM private key of the certificate"),
    "client_ca": Setting(Optional(Str()), None, "PEM CA bundle that signs client certificates (mutual TLS)"),
    "require_client_cert": Setting(Bool(), False, "Refuse agents without a client certificate signed by client_ca"),
}

IDENTITY_SETTINGS: dict[str, Setting] = {
    "token": Setting(Optional(Secret()), None, "Token this identity authenticates with"),
    "certificate": Setting(Optional(Str()), None,
                           "Client certificate name (subject CN or DNS subjectAltName; glob) it authenticates with"),
    "sources": Setting(ListOf(Str(), min_items=1), doc="Source names (globs) it may send; {certificate} is the "
                                                        "matched certificate name"),
}

COLLECTOR_SETTINGS: dict[str, Setting] = {
    "name": Setting(Str(), socket.gethostname(), "This collector's name (in handshakes, logs and metrics)"),
    "listen": Setting(HostPort(), f"127.0.0.1:{DEFAULT_PORT}", "HOST:PORT agents forward to (logflume protocol)"),
    "data_dir": Setting(Str(), "/var/lib/logflume-collector", "Where the default store keeps its files"),
    "max_frame_size": Setting(Size(min=1024), "160MiB", "Largest frame (one batch) accepted; checked before reading"),
    "max_connections": Setting(Int(min=1), 1024, "Connections served at once (per listener); more are closed at once"),
    "max_connections_per_peer": Setting(Int(min=1), 128,
                                        "Connections one IP address may hold (per listener); more are closed at once"),
    "idle_timeout": Setting(Duration(), "5m", "Close a connection that sends nothing for this long"),
    "frame_timeout": Setting(Duration(), "30s", "A frame must arrive within this plus its size at 256KiB/s"),
    "progress_timeout": Setting(Duration(), "10s", "Drop a peer whose admitted batch stops arriving for this long"),
    "max_pending_bytes": Setting(Size(min=1), "512MiB", "Answer TRY_LATER while this many bytes wait for the store"),
    "max_pending_bytes_per_peer": Setting(Size(min=1), "256MiB",
                                          "Answer TRY_LATER while one identity (or address) holds this much"),
    "tls": Setting(Optional(Obj(TLS_SETTINGS)), None, "TLS for the logflume listener (null: plain TCP)"),
    "identities": Setting(MapOf(Obj(IDENTITY_SETTINGS)), {},
                          "Who may connect: name -> token and/or certificate, and the sources it may send"),
    "tokens": Setting(ListOf(Secret()), [], "Shared tokens (every holder is one identity, 'shared-token')"),
    "token_sources": Setting(Optional(ListOf(Str())), None,
                             "Sources (globs) holders of a shared token may send; required with tokens"),
    "insecure": Setting(Bool(), False, "Allow listeners beyond loopback without any credentials configured"),
    "metrics": Setting(Optional(HostPort()), None, "Serve Prometheus metrics on HOST:PORT"),
    "tap_token": Setting(Optional(Secret()), None, "Token `logflume tap` must present to see the chunks and records "
                                                   "passing a component (null: /tap is refused)"),
    "scribe": Setting(Optional(HostPort()), None, "HOST:PORT of the Scribe-compatible endpoint (null: off)"),
    "flume": Setting(Optional(HostPort()), None, "HOST:PORT of the Flume-ThriftSource-compatible endpoint (null: off)"),
    "scribe_tls": Setting(Bool(), False, "Serve the Scribe endpoint with the tls section's certificate"),
    "flume_tls": Setting(Bool(), False, "Serve the Flume endpoint with the tls section's certificate"),
    "thrift_max_frame_size": Setting(Size(min=1024), "16MiB", "Largest frame on the Scribe and Flume endpoints"),
    "shutdown_timeout": Setting(Duration(), "30s", "On SIGTERM, how long in-flight batches may take to finish"),
    "log_level": Setting(Enum("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "Logging level"),
}

SECTIONS = ("collector", "store", "routes")


def default_store(data_dir: str) -> dict[str, Any]:
    return {
        "type": "buffer",
        "primary": {"type": "seqfile", "url": f"{data_dir}/sink"},
        "secondary": {"dir": f"{data_dir}/secondary"},
    }


@dataclass
class CollectorConfig:
    file: str | None
    collector: Values
    store_type: str
    store_cls: type[Sink]
    store_values: Values
    store: Sink
    context: Context
    authenticator: Authenticator = field(default_factory=Authenticator)
    warnings: list[str] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)

    @property
    def router(self) -> StoreRouter:
        """The collector's store: the routes, then the default ``store``."""
        default = Route("default", None, self.store_type, self.store_cls, self.store_values, self.store)
        return StoreRouter(self.routes, default)

    def render(self) -> dict[str, Any]:
        """The resolved config with every default filled in (``logflume check``); routes in match order."""
        default = Route("default", None, self.store_type, self.store_cls, self.store_values, self.store)
        out = {"collector": render_settings(COLLECTOR_SETTINGS, self.collector), "store": default.render_store()}
        if self.routes:
            out["routes"] = {r.name: {"match": r.match.render() if r.match else {}, "store": r.render_store()}
                             for r in self.routes}
        return out


def build_collector_config(raw: dict[str, Any], file: str | None = None) -> CollectorConfig:
    """Validate a parsed collector config and configure (not start) its store."""
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(file, str(key), f"unknown top-level key; expected one of: {', '.join(SECTIONS)}")
    section = raw.get("collector") or {}
    if not isinstance(section, dict):
        raise ConfigError(file, "collector", f"expected a mapping, got {type(section).__name__}")
    values = parse_settings(COLLECTOR_SETTINGS, section, "collector", file)
    tls = values.tls
    if tls is not None and tls.require_client_cert and not tls.client_ca:
        raise ConfigError(file, "collector.tls.client_ca", "required when require_client_cert is true")
    authenticator, warnings = _authentication(values, file)
    ports = [("listen", values.listen)] + [(k, values[k]) for k in ("scribe", "flume") if values[k] is not None]
    seen: dict[tuple[str, int], str] = {}
    for key, addr in ports:
        if addr[1] != 0 and addr in seen:
            other = seen[addr]
            raise ConfigError(file, f"collector.{key}", f"same address as collector.{other}; expected another port")
        seen[addr] = key
    store_raw = raw.get("store")
    if store_raw is None:
        store_raw = default_store(values.data_dir)
    context = Context(agent_name=values.name, data_dir=Path(values.data_dir), metrics=Metrics(), config_file=file)
    store_type, cls, store_values, store = build_store(store_raw, "store", "store", context, file)
    routes = build_routes(raw.get("routes"), context, file)
    check_separate([*routes, Route("default", None, store_type, cls, store_values, store)], file)
    return CollectorConfig(file, values, store_type, cls, store_values, store, context, authenticator, warnings,
                           routes)


def _authentication(values: Values, file: str | None) -> tuple[Authenticator, list[str]]:
    """The collector's Authenticator, and warnings; ConfigError for configs that would leave a listener open.

    A listener beyond loopback needs credentials (identities, shared tokens or
    required client certificates) unless ``insecure: true``; shared tokens need
    ``token_sources``, so letting every token holder speak for every source is
    a choice written down, never a default.
    """
    tls = values.tls
    credentials = []
    for name, ident in values.identities.items():
        where = f"collector.identities.{name}"
        if ident.token is None and ident.certificate is None:
            raise ConfigError(file, where, "expected a token, a certificate, or both")
        if ident.certificate is not None and (tls is None or not tls.client_ca):
            raise ConfigError(file, f"{where}.certificate", "needs collector.tls with client_ca to verify certificates")
        credentials.append(Credential(str(name), tuple(ident.sources), ident.token, ident.certificate))
    if values.tokens:
        if values.token_sources is None:
            raise ConfigError(file, "collector.token_sources", "required with collector.tokens: the source names "
                                                               "(globs) any holder of a shared token may send; ['*'] "
                                                               "lets every agent speak for every other")
        credentials += [Credential("shared-token", tuple(values.token_sources), t) for t in values.tokens]
    require_cert = bool(tls is not None and tls.require_client_cert)
    if require_cert and not credentials:
        raise ConfigError(file, "collector.tls.require_client_cert", "no identity to give a certificate: expected "
                                                                     "collector.identities with a certificate name")
    authenticator = Authenticator(credentials, require_certificate=require_cert)
    warnings: list[str] = []
    listeners = [("listen", values.listen)] + [(k, values[k]) for k in ("scribe", "flume") if values[k] is not None]
    for key in ("scribe_tls", "flume_tls"):
        if values[key] and tls is None:
            raise ConfigError(file, f"collector.{key}", "needs the collector.tls section (cert and key)")
    if authenticator.open and not values.insecure:
        for key, (host, port) in listeners:
            if not is_loopback(host):
                raise ConfigError(file, f"collector.{key}", f"binds {host}:{port} beyond loopback with no credentials "
                                                            "configured; expected collector.identities or "
                                                            "tokens (or insecure: true)")
    if any(c.token for c in credentials):
        # weak tokens, and tokens without tls on `listen`, are reported by logflume.settings.secret_warnings
        clear = [k for k in ("scribe", "flume") if values[k] is not None and not values[f"{k}_tls"]]
        if clear:
            warnings.append(f"collector: tokens travel in clear on {' and '.join(clear)} (no tls); expected "
                            f"collector.{clear[0]}_tls: true")
    # its strength is checked with the section's other secrets
    warnings += tap_token_warnings(values.tap_token, values.metrics, file, "collector.tap_token", strength=False)
    return authenticator, warnings


def load_collector_config(path: str) -> CollectorConfig:
    return build_collector_config(load_yaml(path), str(path))
