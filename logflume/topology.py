"""Validating an agent config into a topology: which source feeds which channel feeds which sink.

Everything a component needs is checked here, before anything starts:
unknown keys, wrong types, unknown plugin types, dangling channel names,
channels nobody drains, and loops (a sink writing what a source reads).
"""

from __future__ import annotations

import fnmatch
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logflume.component import Component, Context
from logflume.config import load_yaml
from logflume.errors import ConfigError
from logflume.metrics import Metrics
from logflume.registry import resolve
from logflume.selector import SELECTOR_SETTINGS, parse_selector
from logflume.settings import (
    Duration,
    Enum,
    HostPort,
    Optional,
    Secret,
    Setting,
    Str,
    Values,
    parse_settings,
    render_settings,
    secret_warnings,
)
from logflume.source import SourceName
from logflume.status import tap_token_warnings

AGENT_SETTINGS: dict[str, Setting] = {
    "name": Setting(SourceName(), socket.gethostname(), "Source name stamped on every chunk (default: the host name)"),
    "data_dir": Setting(Str(), "/var/lib/logflume", "Where checkpoints and file-channel segments live"),
    "metrics": Setting(Optional(HostPort()), None, "Serve Prometheus metrics on HOST:PORT (off by default)"),
    "tap_token": Setting(Optional(Secret()), None, "Token `logflume tap` must present to see the chunks and records "
                                                   "passing a component (null: /tap is refused)"),
    "shutdown_timeout": Setting(Duration(), "30s", "On SIGTERM, how long sinks may drain before the agent exits"),
    "log_level": Setting(Enum("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "Logging level"),
}

SECTIONS = ("agent", "sources", "channels", "sinks", "sinkgroups")


@dataclass
class ComponentSpec:
    kind: str
    name: str
    type: str
    cls: type
    values: Values
    component: Component | None = None
    #: A source's interceptor chain, in order (``sources.NAME.interceptors``).
    interceptors: list[ComponentSpec] = field(default_factory=list)
    #: A source's channel selector (``sources.NAME.selector``, parsed), None: replicate to every channel.
    selector: Values | None = None
    #: A sink group's sinks (``sinkgroups.NAME.sinks``), in the order given.
    members: list[ComponentSpec] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        out = {"type": self.type, **render_settings(self.cls.schema(), self.values)}
        if self.interceptors:
            out["interceptors"] = [i.render() for i in self.interceptors]
        if self.selector is not None:
            out["selector"] = render_settings(SELECTOR_SETTINGS, self.selector)
        if self.members:
            out["members"] = {m.name: m.render() for m in self.members}
        return out


@dataclass
class Topology:
    file: str | None
    agent: Values
    sources: dict[str, ComponentSpec] = field(default_factory=dict)
    channels: dict[str, ComponentSpec] = field(default_factory=dict)
    sinks: dict[str, ComponentSpec] = field(default_factory=dict)
    context: Context | None = None
    #: Problems worth a look that do not stop the agent (weak secrets, tokens without TLS).
    warnings: list[str] = field(default_factory=list)

    def render(self) -> dict[str, Any]:
        """The resolved config with every default filled in (what `logflume check` prints)."""
        sinks: dict[str, Any] = {}
        groups: dict[str, Any] = {}
        for n, s in self.sinks.items():
            if s.members:
                sinks.update((m.name, m.render()) for m in s.members)
                groups[n] = render_settings(s.cls.schema(), s.values)
            else:
                sinks[n] = s.render()
        out = {
            "agent": render_settings(AGENT_SETTINGS, self.agent),
            "sources": {n: s.render() for n, s in self.sources.items()},
            "channels": {n: s.render() for n, s in self.channels.items()},
            "sinks": sinks,
        }
        if groups:
            out["sinkgroups"] = groups
        return out

    def flows(self) -> list[str]:
        """Human lines: ``source tail:weblogs -> channel file:buffer -> sink collector:upstream``."""
        lines = []
        for cname, ch in self.channels.items():
            feeders = [f"{s.type}:{n}" for n, s in self.sources.items() if cname in s.values.channels]
            drains = [f"{s.type}:{n}" + (f"[{','.join(m.name for m in s.members)}]" if s.members else "")
                      for n, s in self.sinks.items() if s.values.channel == cname]
            lines.append(
                f"{', '.join(feeders) or '(no source)'} -> channel {ch.type}:{cname} -> {', '.join(drains)}"
            )
        return lines + self.routing()

    def routing(self) -> list[str]:
        """Human lines for interceptor chains, selectors and sink groups (none when none are configured)."""
        lines = []
        for n, s in self.sources.items():
            if s.interceptors:
                lines.append(f"source {n} intercepts: " + " -> ".join(i.type for i in s.interceptors))
            sel = s.selector
            if sel is None:
                continue
            if sel.type == "replicating":
                required = [c for c in s.values.channels if c not in sel.optional]
                lines.append(f"source {n} replicates to {', '.join(required)}"
                             + (f" (optional: {', '.join(sel.optional)})" if sel.optional else ""))
                continue
            for r in sel.routes:
                match = ", ".join([f"{k} {r.match[k]}" for k in ("datatype", "stream") if r.match[k] is not None]
                                  + [f"tag {k}={v}" for k, v in r.match.tags.items()]) or "everything"
                to = ", ".join(r.channels or sel.default)
                lines.append(f"source {n} selects: {match} -> {to}"
                             + (f" (optional: {', '.join(r.optional)})" if r.optional else ""))
            lines.append(f"source {n} selects: otherwise -> {', '.join(sel.default)}")
        for n, s in self.sinks.items():
            if s.members:
                v = s.values
                if v.processor == "failover":
                    prio = {m.name: v.priority.get(m.name, len(s.members) - i) for i, m in enumerate(s.members)}
                    order = ", ".join(f"{m} (priority {p})" for m, p in sorted(prio.items(), key=lambda x: -x[1]))
                    lines.append(f"sink group {n}: failover over {order}, penalty up to {v.penalty:g}s")
                else:
                    lines.append(f"sink group {n}: load_balance ({v.selector}) over "
                                 f"{', '.join(m.name for m in s.members)}"
                                 + (f", backoff up to {v.max_backoff:g}s" if v.backoff else ", no backoff"))
        return lines


def _section(raw: dict[str, Any], key: str, file: str | None) -> dict[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(file, key, f"expected a mapping of component names to settings, got {type(value).__name__}")
    return value


def _spec(kind: str, section: str, name: str, raw: Any, file: str | None) -> ComponentSpec:
    path = f"{section}[{name}]" if kind == "interceptor" else f"{section}.{name}"
    if not isinstance(raw, dict):
        raise ConfigError(file, path, f"expected a mapping of settings, got {type(raw).__name__}")
    raw = dict(raw)
    has_type = "type" in raw
    type_name = raw.pop("type", None)
    if has_type and type_name is None and kind == "sink":
        type_name = "null"  # YAML reads an unquoted `type: null` as None; the null sink is what was meant
    if not isinstance(type_name, str) or not type_name:
        raise ConfigError(file, f"{path}.type", f"missing required key: expected the {kind} type name")
    cls = resolve(kind, type_name, file, path)
    if kind == "source" and "channel" in raw and "channels" not in raw:
        raw["channels"] = raw.pop("channel")
    interceptors = raw.pop("interceptors", None) if kind == "source" else None
    selector = raw.pop("selector", None) if kind == "source" else None
    values = parse_settings(cls.schema(), raw, path, file)
    spec = ComponentSpec(kind, name, type_name, cls, values)
    if interceptors is not None:
        spec.interceptors = _interceptor_specs(name, interceptors, f"{path}.interceptors", file)
    if selector is not None:
        spec.selector = parse_selector(selector, list(values.channels), f"{path}.selector", file)
    return spec


def _interceptor_specs(source: str, raw: Any, path: str, file: str | None) -> list[ComponentSpec]:
    """A source's ``interceptors:`` list; each is named ``SOURCE.TYPE`` (``SOURCE.TYPE.INDEX`` when repeated)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(file, path, f"expected a list of interceptors (each a mapping with 'type'), "
                                      f"got {type(raw).__name__}")
    specs = [_spec("interceptor", path, str(i), item, file) for i, item in enumerate(raw)]
    for i, spec in enumerate(specs):
        repeated = sum(1 for s in specs if s.type == spec.type) > 1
        spec.name = f"{source}.{spec.type}.{i}" if repeated else f"{source}.{spec.type}"
    return specs


def build_topology(raw: dict[str, Any], file: str | None = None, context: Context | None = None) -> Topology:
    """Validate a parsed agent config; instantiate (configure only) every component."""
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(file, str(key), f"unknown top-level key; expected one of: {', '.join(SECTIONS)}")
    agent_raw = raw.get("agent") or {}
    if not isinstance(agent_raw, dict):
        raise ConfigError(file, "agent", "expected a mapping")
    agent = parse_settings(AGENT_SETTINGS, agent_raw, "agent", file)
    topo = Topology(file, agent)
    for section, kind, target in (
        ("channels", "channel", topo.channels),
        ("sources", "source", topo.sources),
        ("sinks", "sink", topo.sinks),
    ):
        for name, spec_raw in _section(raw, section, file).items():
            target[str(name)] = _spec(kind, section, str(name), spec_raw, file)
    if not topo.sources:
        raise ConfigError(file, "sources", "no sources defined: expected at least one")
    if not topo.sinks:
        raise ConfigError(file, "sinks", "no sinks defined: expected at least one")
    known = sorted(topo.channels)
    for name, src in topo.sources.items():
        for i, ch in enumerate(src.values.channels):
            if ch not in topo.channels:
                raise ConfigError(
                    file, f"sources.{name}.channels[{i}]",
                    f"no channel named {ch!r}; expected one of: {', '.join(known) or '(none defined)'}",
                )
    for name, sink in topo.sinks.items():
        if sink.values.channel not in topo.channels:
            raise ConfigError(
                file, f"sinks.{name}.channel",
                f"no channel named {sink.values.channel!r}; expected one of: {', '.join(known) or '(none defined)'}",
            )
    _sink_groups(topo, _section(raw, "sinkgroups", file), file)
    for name in topo.channels:
        if not any(s.values.channel == name for s in topo.sinks.values()):
            raise ConfigError(file, f"channels.{name}", "no sink takes from this channel: it would fill up and stall")

    ctx = context or Context(
        agent_name=agent.name, data_dir=Path(agent.data_dir), metrics=Metrics(), config_file=file,
    )
    topo.context = ctx
    for section, specs in (("channels", topo.channels), ("sources", topo.sources), ("sinks", topo.sinks)):
        for name, spec in specs.items():
            for member in spec.members:
                try:
                    member.component = member.cls(member.name, member.values, ctx)
                except ConfigError:
                    raise
                except (ValueError, TypeError) as exc:
                    raise ConfigError(file, f"sinks.{member.name}", str(exc)) from None
            where = f"sinkgroups.{name}" if spec.members else f"{section}.{name}"
            try:
                spec.component = spec.cls(name, spec.values, ctx)
            except ConfigError:
                raise
            except (ValueError, TypeError) as exc:
                raise ConfigError(file, where, str(exc)) from None
            if spec.members:
                spec.component.attach([m.component for m in spec.members])
            for i, icp in enumerate(spec.interceptors):
                try:
                    icp.component = icp.cls(icp.name, icp.values, ctx)
                except ConfigError:
                    raise
                except (ValueError, TypeError) as exc:
                    raise ConfigError(file, f"{section}.{name}.interceptors[{i}]", str(exc)) from None
    _check_loops(topo, file)
    for section, specs in (("sources", topo.sources), ("channels", topo.channels), ("sinks", topo.sinks)):
        for name, spec in specs.items():
            topo.warnings += secret_warnings(spec.cls.schema(), spec.values, f"{section}.{name}", file)
    topo.warnings += tap_token_warnings(agent.tap_token, agent.metrics, file, "agent.tap_token")
    return topo


def _sink_groups(topo: Topology, raw: dict[str, Any], file: str | None) -> None:
    """Replace the sinks of each group by the group: one sink, one runner, on the channel its sinks share."""
    from logflume.sinkgroup import SinkGroup

    grouped: dict[str, str] = {}
    for gname, graw in raw.items():
        gname = str(gname)
        path = f"sinkgroups.{gname}"
        if not isinstance(graw, dict):
            raise ConfigError(file, path, f"expected a mapping with sinks and processor, got {type(graw).__name__}")
        if "channel" in graw:
            raise ConfigError(file, f"{path}.channel", "a sink group takes from its sinks' channel; "
                                                       "expected no channel key")
        if gname in topo.sinks:
            raise ConfigError(file, path, f"a sink is named {gname!r} too; expected distinct names")
        members = graw.get("sinks")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(file, f"{path}.sinks", "expected a list of sink names (at least two)")
        specs = []
        for i, member in enumerate(members):
            if member in grouped:
                raise ConfigError(file, f"{path}.sinks[{i}]", f"sink {member!r} is already in group "
                                                              f"{grouped[member]!r}; expected each sink in one group")
            if member not in topo.sinks:
                raise ConfigError(file, f"{path}.sinks[{i}]", f"no sink named {member!r}; expected one of: "
                                  f"{', '.join(sorted(n for n in topo.sinks if not topo.sinks[n].members))}")
            specs.append(topo.sinks[member])
        channels = {s.values.channel for s in specs}
        if len(channels) > 1:
            names = ", ".join(sorted(channels))
            raise ConfigError(file, f"{path}.sinks", f"the sinks take from different channels ({names}); "
                                                     "expected one channel for the group")
        values = parse_settings(SinkGroup.schema(), {**graw, "channel": specs[0].values.channel}, path, file)
        for member in members:
            grouped[member] = gname
            del topo.sinks[member]
        group = ComponentSpec("sink", gname, values.processor, SinkGroup, values)
        group.members = specs
        topo.sinks[gname] = group


def _check_loops(topo: Topology, file: str | None) -> None:
    """A sink that writes what a source reads makes data circulate forever: refuse it."""
    edges: dict[str, list[str]] = {}
    for name, src in topo.sources.items():
        edges[f"sources.{name}"] = [f"channels.{c}" for c in src.values.channels]
    for name, sink in topo.sinks.items():
        edges.setdefault(f"channels.{sink.values.channel}", []).append(f"sinks.{name}")
        writes = sink.component.writes() if sink.component else []
        for sname, src in topo.sources.items():
            reads = src.component.reads() if src.component else []
            if any(fnmatch.fnmatchcase(w, r) or w == r for w in writes for r in reads):
                edges.setdefault(f"sinks.{name}", []).append(f"sources.{sname}")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise ConfigError(file, nxt, "loop in the pipeline: " + " -> ".join(cycle)
                                  + " (a sink writes what a source reads); expected an acyclic flow")
            if state.get(nxt, 0) == 0:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in list(edges):
        if state.get(node, 0) == 0:
            visit(node)


def load_topology(path: str, context: Context | None = None) -> Topology:
    return build_topology(load_yaml(path), str(path), context)
