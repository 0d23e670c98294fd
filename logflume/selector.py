"""Channel selectors: which of a source's channels get each chunk (Flume's replicating and multiplexing).

``replicating`` (the default) puts every chunk into every channel of the
source.  ``multiplexing`` picks channels per chunk: the first route whose
``match`` the chunk fits (globs on datatype, stream and tags) names its
channels, and a chunk no route takes goes to ``default``.

Flume's semantics: a chunk's *required* channels must all commit it, or the
source's ``deliver`` fails (and blocks while one is full, as always);
*optional* channels get it if they can within ``optional_timeout``, and a
failure there (full, refused, closed) is counted
(``logflume_optional_dropped_total``) and logged, never fatal.
"""

from __future__ import annotations

from typing import Any

from logflume.chunk import Chunk
from logflume.chunkmatch import MATCH_SETTINGS, ChunkMatch
from logflume.errors import ConfigError
from logflume.settings import (
    Duration,
    Enum,
    ListOf,
    Obj,
    Setting,
    Str,
    Values,
    parse_settings,
    render_settings,
)

ROUTE_SETTINGS: dict[str, Setting] = {
    "match": Setting(Obj(MATCH_SETTINGS), doc="What the route takes: every field given must match"),
    "channels": Setting(ListOf(Str()), [], "Required channels of the matching chunks"),
    "optional": Setting(ListOf(Str()), [], "Optional channels of the matching chunks"),
}

SELECTOR_SETTINGS: dict[str, Setting] = {
    "type": Setting(Enum("replicating", "multiplexing"), "replicating", "How channels are chosen"),
    "routes": Setting(ListOf(Obj(ROUTE_SETTINGS)), [], "multiplexing: routes in order, the first match wins"),
    "default": Setting(ListOf(Str()), [], "multiplexing: required channels of chunks no route takes "
                       "(or whose route names only optional ones)"),
    "optional": Setting(ListOf(Str()), [], "replicating: channels of the source that are optional"),
    "optional_timeout": Setting(Duration(), "0s", "How long a put into an optional channel may wait for room"),
}


class ChannelSelector:
    """Maps a chunk to (required, optional) channel names of one source."""

    def __init__(self, values: Values, channels: list[str]) -> None:
        self.values = values
        self.type = values.type
        if self.type == "replicating":
            optional = tuple(c for c in channels if c in values.optional)
            self._all = (tuple(c for c in channels if c not in optional), optional)
        self.routes = [(ChunkMatch.from_values(r.match),
                        tuple(r.channels or values.default), tuple(c for c in r.optional if c not in r.channels))
                       for r in values.routes]
        self.default = (tuple(values.default), ())

    def select(self, chunk: Chunk) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if self.type == "replicating":
            return self._all
        for match, required, optional in self.routes:
            if match.matches(chunk):
                return required, optional
        return self.default

    def render(self) -> dict[str, Any]:
        return render_settings(SELECTOR_SETTINGS, self.values)


def parse_selector(raw: Any, channels: list[str], path: str, file: str | None) -> Values:
    """Validate ``sources.NAME.selector``: its channels must be channels of the source."""
    if not isinstance(raw, dict):
        raise ConfigError(file, path, f"expected a mapping (type: replicating | multiplexing), "
                                      f"got {type(raw).__name__}")
    values = parse_settings(SELECTOR_SETTINGS, raw, path, file)

    def check(names: list[str], where: str) -> None:
        for i, name in enumerate(names):
            if name not in channels:
                raise ConfigError(file, f"{where}[{i}]", f"{name!r} is not one of this source's channels; "
                                                          f"expected one of: {', '.join(channels)}")

    if values.type == "replicating":
        if values.routes or values.default:
            raise ConfigError(file, f"{path}.{'routes' if values.routes else 'default'}",
                              "only a multiplexing selector has routes and a default; expected type: multiplexing")
        check(values.optional, f"{path}.optional")
        if set(channels) <= set(values.optional):
            raise ConfigError(file, f"{path}.optional", "every channel is optional: expected at least one required")
        return values
    if values.optional:
        raise ConfigError(file, f"{path}.optional", "a multiplexing selector names optional channels per route")
    if not values.default:
        raise ConfigError(file, f"{path}.default", "missing: expected the channel(s) of chunks no route takes")
    check(values.default, f"{path}.default")
    for i, route in enumerate(values.routes):
        check(route.channels, f"{path}.routes[{i}].channels")
        check(route.optional, f"{path}.routes[{i}].optional")
        if not route.channels and not route.optional:
            raise ConfigError(file, f"{path}.routes[{i}]", "a route names no channel: expected channels or optional")
    return values
