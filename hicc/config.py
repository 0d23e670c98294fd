"""The console's YAML: one ``hicc:`` section, checked like every logflume config (file, key path, expected).

It listens on loopback by default; any other address needs TLS and a token
(or put it on loopback behind a reverse proxy that does both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from logflume.config import load_yaml
from logflume.errors import ConfigError
from logflume.secrets import is_loopback
from logflume.settings import (
    Duration,
    Enum,
    HostPort,
    Int,
    ListOf,
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

DEFAULT_PORT = 7480

TLS_SETTINGS: dict[str, Setting] = {
    "cert": Setting(Str(), doc="PEM server certificate (chain) file"),
    "key": Setting(Str(), doc="PEM private key of the certificate"),
}

HICC_SETTINGS: dict[str, Setting] = {
    "listen": Setting(HostPort(), f"127.0.0.1:{DEFAULT_PORT}", "HOST:PORT of the console (loopback by default)"),
    "data_dir": Setting(Str(), "/var/lib/logflume-hicc", "Where the time series (SQLite) lives"),
    "agents": Setting(ListOf(HostPort()), [], "Agents to watch: their `metrics` HOST:PORT"),
    "collectors": Setting(ListOf(HostPort()), [], "Collectors to watch: their `metrics` HOST:PORT"),
    "agents_file": Setting(Optional(Str()), None, "File with one agent HOST:PORT per line; re-read when it changes"),
    "collectors_file": Setting(Optional(Str()), None, "File with one collector HOST:PORT per line"),
    "poll_interval": Setting(Duration(), "2s", "How often every target's /status is polled"),
    "poll_timeout": Setting(Duration(), "2s", "A target that does not answer within this is shown down"),
    "retention": Setting(Duration(), "6h", "How much history the time series keeps"),
    "max_db_size": Setting(Size(min=1024 * 1024), "256MiB", "Cap of the time series file; oldest samples go first"),
    "store": Setting(Optional(Str()), None, "URL or directory of the collectors' sink files"),
    "archive": Setting(Optional(Str()), None, "Output URL or directory of `logflume archive`"),
    "demux": Setting(Optional(Str()), None, "Output URL or directory of `logflume demux` (searched on Records)"),
    "page_size": Setting(Int(min=10, max=1000), 100, "Rows per page in tables"),
    "refresh": Setting(Duration(), "5s", "Pages with live state reload this often (0: never)"),
    "search_timeout": Setting(Duration(), "10s", "A record search is cancelled after this long"),
    "tls": Setting(Optional(Obj(TLS_SETTINGS)), None, "Serve HTTPS (required beyond loopback)"),
    "token": Setting(Optional(Secret()), None, "Token to open the console (required beyond loopback)"),
    "log_level": Setting(Enum("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "Logging level"),
}


@dataclass
class HiccConfig:
    file: str | None
    values: Values

    def render(self) -> dict[str, Any]:
        return {"hicc": render_settings(HICC_SETTINGS, self.values)}


def build_hicc_config(raw: dict[str, Any], file: str | None = None) -> HiccConfig:
    for key in raw:
        if key != "hicc":
            raise ConfigError(file, str(key), "unknown top-level key; expected one of: hicc")
    section = raw.get("hicc") or {}
    if not isinstance(section, dict):
        raise ConfigError(file, "hicc", f"expected a mapping, got {type(section).__name__}")
    values = parse_settings(HICC_SETTINGS, section, "hicc", file)
    if not is_loopback(values.listen[0]) and (values.tls is None or not values.token):
        raise ConfigError(file, "hicc.listen", f"{values.listen[0]} is not loopback: expected tls and token set "
                          "(or listen on 127.0.0.1 behind a reverse proxy)")
    if values.poll_interval <= 0:
        raise ConfigError(file, "hicc.poll_interval", "expected a duration above 0")
    return HiccConfig(file, values)


def load_hicc_config(path: str) -> HiccConfig:
    return build_hicc_config(load_yaml(path), str(path))
