"""What a reload must replace: the difference between the running topology and a new, validated one.

A component is *kept* (the same object, its data and threads untouched) when
its type and resolved settings are equal and nothing it is wired to is
replaced.  A source feeding a replaced channel, or a sink draining one, is
replaced too: it holds a reference to the old channel object.  Settings of
the ``agent`` section other than ``log_level``, ``shutdown_timeout`` and
``tap_token`` cannot change live (they name the process, its state directory
and its endpoint); such changes are reported and ignored until a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from logflume.settings import render_settings
from logflume.topology import AGENT_SETTINGS, ComponentSpec, Topology

#: Agent settings a reload applies; the others need a restart.
LIVE_AGENT_SETTINGS = ("log_level", "shutdown_timeout", "tap_token")


def _same(a: ComponentSpec, b: ComponentSpec) -> bool:
    return a.type == b.type and a.render() == b.render()


@dataclass
class ReloadPlan:
    """Names per kind: ``stop`` are removed or replaced, ``start`` are added or replacements."""

    stop_sources: list[str] = field(default_factory=list)
    stop_sinks: list[str] = field(default_factory=list)
    stop_channels: list[str] = field(default_factory=list)
    start_channels: list[str] = field(default_factory=list)
    start_sinks: list[str] = field(default_factory=list)
    start_sources: list[str] = field(default_factory=list)
    #: Agent settings that changed but need a restart (``agent.data_dir`` ...).
    needs_restart: list[str] = field(default_factory=list)
    #: Filled while applying: ``kind.name: reason`` of components that did not start.
    failed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.stop_sources or self.stop_sinks or self.stop_channels
                    or self.start_channels or self.start_sinks or self.start_sources)

    def summary(self) -> str:
        parts = []
        for verb, kind in (("stop", "sources"), ("stop", "sinks"), ("stop", "channels"),
                           ("start", "channels"), ("start", "sinks"), ("start", "sources")):
            names = getattr(self, f"{verb}_{kind}")
            if names:
                parts.append(f"{verb} {kind} {','.join(names)}")
        return "; ".join(parts) or "nothing changed"


def plan_reload(old: Topology, new: Topology) -> ReloadPlan:
    """Which components to stop and start to go from ``old`` to ``new`` (both validated)."""
    plan = ReloadPlan()
    old_agent = render_settings(AGENT_SETTINGS, old.agent)
    new_agent = render_settings(AGENT_SETTINGS, new.agent)
    plan.needs_restart = [f"agent.{k}" for k in old_agent
                          if k not in LIVE_AGENT_SETTINGS and old_agent[k] != new_agent.get(k)]

    channels_out = {n for n, s in old.channels.items() if n not in new.channels or not _same(s, new.channels[n])}
    plan.stop_channels = sorted(channels_out)
    plan.start_channels = sorted(n for n in new.channels if n not in old.channels or n in channels_out)

    def replaced_source(name: str) -> bool:
        spec = old.sources[name]
        return (name not in new.sources or not _same(spec, new.sources[name])
                or any(c in channels_out for c in spec.values.channels))

    def replaced_sink(name: str) -> bool:
        spec = old.sinks[name]
        return name not in new.sinks or not _same(spec, new.sinks[name]) or spec.values.channel in channels_out

    plan.stop_sources = sorted(n for n in old.sources if replaced_source(n))
    plan.start_sources = sorted(n for n in new.sources if n not in old.sources or n in plan.stop_sources)
    plan.stop_sinks = sorted(n for n in old.sinks if replaced_sink(n))
    plan.start_sinks = sorted(n for n in new.sinks if n not in old.sinks or n in plan.stop_sinks)
    return plan
