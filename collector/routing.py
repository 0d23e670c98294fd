"""Store routing: each chunk goes to the store of the first route whose match it fits, or to the default store.

Scribe's per-category stores, for every kind of chunk: a route matches the
datatype, the stream (a Scribe category becomes the stream of its chunks; for
tailed files it is the path) and tags, with globs, and has a store of its own:
any sink, typically a ``buffer`` store with its own primary, secondary, roll
settings, codec and ``path`` template, or a group of stores
(``collector.storegroup``).  Because every route has its own store, failover
to a secondary and ordered replay happen per route: one route's primary being
down never holds back another's.

A batch that spans routes is split (keeping each route's chunks in their
order) and acknowledged only once every route's store holds its part
durably.  The first part that fails fails the batch; the agent sends it again,
so parts already stored arrive twice (at-least-once; archive removes them).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from collector.store import NestedSink
from collector.storegroup import GROUP_TYPE, StoreGroup
from logflume.chunk import Chunk
from logflume.chunkmatch import MATCH_SETTINGS, ChunkMatch
from logflume.component import Context
from logflume.errors import ConfigError, StartupError
from logflume.registry import resolve
from logflume.settings import Values, parse_settings, render_settings
from logflume.sink import Sink

_ROUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")

@dataclass
class Route:
    """A named store and the chunks it takes (``match`` None: the default store, which takes the rest)."""

    name: str
    match: ChunkMatch | None
    store_type: str
    store_cls: type[Sink]
    store_values: Values
    store: Sink

    def render_store(self) -> dict[str, Any]:
        out = {"type": self.store_type, **render_settings(self.store_cls.schema(), self.store_values)}
        out.pop("channel", None)
        if isinstance(self.store, StoreGroup):  # the members last, after the group's settings
            members = out.pop("sinks")
            if self.store.config.processor == "failover":  # every member's priority, given or by order
                out["priority"] = {k: m.priority for k, m in zip(members, self.store.members, strict=True)}
            out["sinks"] = members
        return out


def parse_store(raw: Any, where: str, file: str | None, *, member: bool = False) -> NestedSink:
    """Validate a store section (``{type: SINK, ...}``; ``type: group`` is a group of stores defined inline).

    The default store, every route's store and every member of a group are validated here, so a mistake
    is reported the same way wherever it is (file, key path, what was expected)."""
    if not isinstance(raw, dict):
        raise ConfigError(file, where, f"expected a mapping with a type, got {type(raw).__name__}")
    raw = dict(raw)
    store_type = raw.pop("type", None)
    if not isinstance(store_type, str) or not store_type:
        raise ConfigError(file, f"{where}.type", "missing required key: expected a sink type name (e.g. buffer)")
    if store_type == GROUP_TYPE:
        if member:
            raise ConfigError(file, f"{where}.type", "a group's member cannot be a group; expected a store type "
                                                     "(e.g. buffer)")
        cls: type[Sink] = StoreGroup
    else:
        cls = resolve("sink", store_type, file, where)
    raw.setdefault("channel", "-")  # a store takes from the collector, not from a channel
    return NestedSink(store_type, cls, parse_settings(cls.schema(), raw, where, file))


def build_store(raw: Any, where: str, name: str, context: Context, file: str | None) -> tuple[str, type[Sink],
                                                                                              Values, Sink]:
    """Validate a store section and configure (not start) the sink, named ``name``."""
    nested = parse_store(raw, where, file)
    try:
        store = nested.cls(name, nested.values, context)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(file, where, str(exc)) from None
    return nested.type, nested.cls, nested.values, store


def build_routes(raw: Any, context: Context, file: str | None) -> list[Route]:
    """The ``routes:`` section (name -> {match, store}, first match wins in file order), stores configured."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigError(file, "routes", f"expected a mapping of route names to {{match, store}}, "
                                          f"got {type(raw).__name__}")
    routes = []
    for name, spec in raw.items():
        where = f"routes.{name}"
        if not isinstance(name, str) or not _ROUTE_NAME.match(name):
            raise ConfigError(file, where, "expected a route name of letters, digits, '_' and '-'")
        if not isinstance(spec, dict):
            raise ConfigError(file, where, f"expected a mapping with match and store, got {type(spec).__name__}")
        for key in spec:
            if key not in ("match", "store"):
                raise ConfigError(file, f"{where}.{key}", "unknown key; expected match or store")
        if "store" not in spec:
            raise ConfigError(file, f"{where}.store", "missing required key: expected a store ({type: buffer, ...})")
        if not isinstance(spec.get("match"), dict) or not spec["match"]:
            raise ConfigError(file, f"{where}.match", "expected a mapping with datatype, stream and/or tags "
                                                      "(a route matching everything is the default store's job)")
        m = parse_settings(MATCH_SETTINGS, spec["match"], f"{where}.match", file)
        match = ChunkMatch.from_values(m)
        if match == ChunkMatch():
            raise ConfigError(file, f"{where}.match", "expected at least one of datatype, stream, tags")
        routes.append(Route(str(name), match, *build_store(spec["store"], f"{where}.store", f"{where}.store",
                                                           context, file)))
    return routes


def _leaves(store: Sink) -> list[Sink]:
    """The stores that write files: a group's members, or the store itself."""
    return [m.sink for m in store.members] if isinstance(store, StoreGroup) else [store]


def buffer_stores(stores: Sequence[Sink]) -> list[Sink]:
    """Every buffer store among ``stores`` and their groups' members (whose readiness /ready reports)."""
    from collector.store import BufferStore

    return [leaf for store in stores for leaf in _leaves(store) if isinstance(leaf, BufferStore)]


def _places(store: Sink) -> list[str]:
    """Where a store keeps its files, to refuse two stores sharing one (their recovery and replay would mix)."""
    from collector.store import BufferStore
    from sinks.seqfile import SeqFileSink

    if isinstance(store, StoreGroup):
        return [p for m in store.members for p in _places(m.sink)]
    if isinstance(store, BufferStore):
        return [*_places(store.primary), "secondary " + os.path.abspath(store.secondary.local_root)]
    if isinstance(store, SeqFileSink):
        root = store.config.url if store.remote else store.local_root
        return [f"{root.rstrip('/')}/{store.config.path} as {store.collector}"]
    return []


def _group_lines(group: StoreGroup) -> tuple[str, list[str]]:
    """What a group store's route line says, and one line per member in the order they are tried."""
    cfg = group.config
    if cfg.processor == "failover":
        head = f"group failover (penalty up to {render_settings(group.schema(), cfg)['penalty']})"
        members = sorted(zip(group.members, group.member_types, strict=True), key=lambda mt: -mt[0].priority)
    else:
        backoff = f"backoff up to {render_settings(group.schema(), cfg)['max_backoff']}" if cfg.backoff \
            else "no backoff"
        head = f"group load_balance {cfg.selector} ({backoff})"
        members = list(zip(group.members, group.member_types, strict=True))
    lines = []
    for m, type_name in members:
        key = m.sink.name.rsplit(".", 1)[-1]
        rank = f" (priority {m.priority})" if cfg.processor == "failover" else ""
        lines.append(f"  {key}{rank}: {type_name} ({', '.join(_places(m.sink)) or type_name})")
    return head, lines


def route_lines(routes: Sequence[Route]) -> list[str]:
    """One line per route in match order, the default last: what it takes and where its store writes, and for
    a group one more line per member (``logflume check`` prints them; credentials in URLs are redacted)."""
    from logflume.secrets import redact_text

    out = []
    for route in routes:
        if route.match is None:
            takes = "everything else"
        else:
            m = route.match.render()
            parts = [f"{k}={m[k]}" for k in ("datatype", "stream") if k in m]
            parts += [f"tags.{k}={v}" for k, v in m.get("tags", {}).items()]
            takes = " and ".join(parts)
        if isinstance(route.store, StoreGroup):
            head, members = _group_lines(route.store)
            out.append(redact_text(f"{route.name}: {takes} -> {head}"))
            out += [redact_text(line) for line in members]
            continue
        places = ", ".join(_places(route.store)) or route.store_type
        out.append(redact_text(f"{route.name}: {takes} -> {route.store_type} ({places})"))
    return out


def _file_sinks(store: Sink) -> list[Sink]:
    """The SequenceFile sinks a store writes its product with (a buffer's primary, a group's members)."""
    from collector.store import BufferStore
    from sinks.seqfile import SeqFileSink

    if isinstance(store, StoreGroup):
        return [s for m in store.members for s in _file_sinks(m.sink)]
    if isinstance(store, BufferStore):
        return _file_sinks(store.primary)
    return [store] if isinstance(store, SeqFileSink) else []


def check_separate(routes: Sequence[Route], file: str | None) -> None:
    """ConfigError when two stores (routes' stores or members of a group) would write the same files or share
    a secondary, or when one's ``path`` template may name the other's directories (same root and collector
    name): recovery at start takes every in-progress file its layout matches for its own."""
    from sinks.seqfile import layouts_overlap

    seen: dict[str, str] = {}
    layouts: list[tuple[str, str, str, str]] = []  # (root, collector, path, where)
    for route in routes:
        for store in _leaves(route.store):
            where = store.name  # a store is named by its key path: store, routes.NAME.store, ....sinks.MEMBER
            for place in _places(store):
                if place in seen:
                    raise ConfigError(file, where, f"writes the same place as {seen[place]} ({place}); expected its "
                                                   "own secondary dir and primary url, path or collector_name")
                seen[place] = where
            for sink in _file_sinks(store):
                root = (sink.config.url if sink.remote else sink.local_root).rstrip("/")
                for o_root, o_collector, o_path, o_where in layouts:
                    if (o_root, o_collector) == (root, sink.collector) and layouts_overlap(o_path, sink.config.path):
                        raise ConfigError(file, f"{sink.name}.path", f"{sink.config.path!r} may name the same "
                                          f"directories as {o_where}'s {o_path!r} under {root} as {sink.collector}; "
                                          "expected a path that cannot match the other's (e.g. a different "
                                          "literal first directory), or its own url or collector_name")
                layouts.append((root, sink.collector, sink.config.path, sink.name))


class StoreRouter:
    """The collector's store: splits each batch by route and returns once every route's store holds its part."""

    def __init__(self, routes: Sequence[Route], default: Route) -> None:
        self.routes = list(routes)
        self.default = default
        self._started: list[Route] = []

    @property
    def all(self) -> list[Route]:
        return [*self.routes, self.default]

    def route_of(self, chunk: Chunk) -> Route:
        for route in self.routes:
            assert route.match is not None
            if route.match.matches(chunk):
                return route
        return self.default

    def split(self, chunks: Sequence[Chunk]) -> list[tuple[Route, list[Chunk]]]:
        """Chunks by route (each route's in their order), routes in the order their first chunk came."""
        if not self.routes:
            return [(self.default, list(chunks))] if chunks else []
        parts: dict[str, tuple[Route, list[Chunk]]] = {}
        for c in chunks:
            route = self.route_of(c)
            parts.setdefault(route.name, (route, []))[1].append(c)
        return list(parts.values())

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        for route, part in self.split(chunks):
            route.store.deliver(part)

    def start(self) -> None:
        """Start every store; StartupError naming the route (and the others stopped again) if one cannot start."""
        for route in self.all:
            where = "store" if route.match is None else f"route {route.name}"
            try:
                route.store.start()
            except Exception as exc:
                self.stop()
                if isinstance(exc, StartupError) and route.match is None:
                    raise
                reason = exc if isinstance(exc, StartupError) else f"{where} ({route.store_type}) cannot start: {exc}"
                raise StartupError(f"route {route.name}: {reason}" if route.match is not None else reason) from None
            self._started.append(route)

    def flush(self) -> None:
        errors = []
        for route in self._started:
            try:
                route.store.flush()
            except Exception as exc:  # noqa: BLE001 - flush the other routes anyway
                errors.append(f"{route.name}: {exc}")
        if errors:
            raise OSError("store flush failed: " + "; ".join(errors))

    def stop(self) -> None:
        errors = []
        while self._started:
            route = self._started.pop()
            try:
                route.store.stop()
            except Exception as exc:  # noqa: BLE001 - stop the other routes anyway
                errors.append(f"{route.name}: {exc}")
        if errors:
            raise OSError("store stop failed: " + "; ".join(errors))

    def describe(self) -> list[dict[str, Any]]:
        return [{"route": r.name, "match": r.match.render() if r.match else "default", "store": r.store.describe()}
                for r in self.all]
