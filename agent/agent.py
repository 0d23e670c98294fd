"""Agent: runs one validated topology: channels, sink runners, sources.

Start order is channels, sinks, sources (so nothing is produced before it can
be consumed); stop order is the reverse: sources stop first, sinks drain what
the channels hold until ``shutdown_timeout``, then channels close.  Chunks left
in a durable channel are delivered after the next start; a memory channel's
are lost, which is why a graceful stop drains first.

SIGHUP (or ``logflume reload``) re-reads and validates the config, then
replaces only what changed (:meth:`Agent.reload`, planned by ``agent.reload``);
the outcome is written to ``<data_dir>/reload.json``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from agent.reload import LIVE_AGENT_SETTINGS, ReloadPlan, plan_reload
from agent.runner import ChannelOutput, SinkRunner, source_output
from logflume.channel import Channel
from logflume.errors import ConfigError, StartupError
from logflume.reload_files import PID_FILES, RELOAD_FILE
from logflume.settings import Values
from logflume.signals import DaemonSignals
from logflume.statefile import make_state_dir, write_atomic
from logflume.status import PipelineStatus
from logflume.tap import carry
from logflume.topology import Topology, load_topology

PID_FILE = PID_FILES["agent"]


log = logging.getLogger("logflume.agent")


class Agent:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.context = topology.context
        self.runners: list[SinkRunner] = []
        self._started: list = []
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.reloads = 0

    @property
    def channels(self):
        return {n: s.component for n, s in self.topology.channels.items()}

    @property
    def sources(self):
        return {n: s.component for n, s in self.topology.sources.items()}

    @property
    def sinks(self):
        return {n: s.component for n, s in self.topology.sinks.items()}

    def start(self) -> None:
        """Start everything; on any failure stop what started and raise StartupError."""
        topo = self.topology
        try:
            data_dir = self.context.data_dir
            try:
                make_state_dir(data_dir)  # owner-only: it holds positions and buffered logs
            except OSError as exc:
                raise StartupError(f"data_dir {data_dir}: {exc.strerror or exc}") from None
            if not os.access(data_dir, os.W_OK):
                raise StartupError(f"data_dir {data_dir} is not writable")
            if topo.agent.metrics:
                host, port = topo.agent.metrics
                self.context.metrics.status = PipelineStatus.for_agent(topo)
                try:
                    self.context.metrics.serve(host, port, topo.agent.tap_token)
                except OSError as exc:
                    raise StartupError(f"metrics endpoint {host}:{port}: {exc.strerror or exc}") from None
            for name in topo.channels:
                self._start_channel(topo, name)
            for name in topo.sinks:
                self._start_sink(topo, name)
            for name in topo.sources:
                self._start_source(topo, name)
            write_atomic(Path(data_dir) / PID_FILE, f"{os.getpid()}\n".encode())
        except BaseException:
            self.stop(timeout=0)
            raise
        log.info("agent %s started: %s", self.context.agent_name, "; ".join(topo.flows()))

    def _start_channel(self, topo: Topology, name: str) -> None:
        self._start_component("channel", name, topo.channels[name].component.start, topo)

    def _start_sink(self, topo: Topology, name: str) -> None:
        spec = topo.sinks[name]
        self._start_component("sink", name, spec.component.start, topo)
        runner = SinkRunner(spec.component, topo.channels[spec.values.channel].component)
        runner.start()
        self.runners.append(runner)

    def _start_source(self, topo: Topology, name: str) -> None:
        spec = topo.sources[name]
        output = source_output(spec, topo.channels)
        self._start_component("source", name, lambda c=spec.component, o=output: c.start(o), topo)

    def _start_component(self, kind: str, name: str, start, topo: Topology | None = None) -> None:
        spec = getattr(topo or self.topology, kind + "s")[name]
        try:
            start()
        except StartupError:
            raise
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            raise StartupError(f"{kind} {name}: {exc.strerror or exc}{where}") from None
        self._started.append(spec.component)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop: sources first, then drain sinks within ``timeout``, then close channels."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
        timeout = self.topology.agent.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        topo = self.topology
        for spec in topo.sources.values():
            if spec.component in self._started:
                self._safe(spec.component.stop, "source", spec.name)
        for runner in self.runners:
            runner.drain()
        for runner in self.runners:
            if not runner.join(max(0.0, deadline - time.monotonic())):
                left = runner.channel.size_chunks()
                log.warning("sink %s did not drain within %.0fs; %d chunk(s) stay in channel %s%s",
                            runner.sink.name, timeout, left, runner.channel.name,
                            "" if runner.channel.durable else " and are lost (memory channel)")
        for runner in self.runners:
            runner.stop(timeout=5)
        for spec in topo.sinks.values():
            if spec.component in self._started:
                self._safe(spec.component.flush, "sink", spec.name)
                self._safe(spec.component.stop, "sink", spec.name)
        for spec in topo.channels.values():
            if spec.component in self._started:
                self._safe(spec.component.close, "channel", spec.name)
        self.context.metrics.close()
        try:
            os.unlink(Path(self.context.data_dir) / PID_FILE)
        except OSError:
            pass
        log.info("agent stopped")

    @staticmethod
    def _safe(fn, kind: str, name: str) -> None:
        try:
            fn()
        except Exception:
            log.exception("error stopping %s %s", kind, name)

    # -- reload -------------------------------------------------------------------------------

    def reload_from_file(self) -> ReloadPlan | None:
        """Re-read and validate the config file, then :meth:`reload`; a bad config changes nothing.

        Returns the plan applied, or None when the config was refused (the reason is logged and
        written to ``reload.json``).
        """
        file = self.topology.file
        try:
            if file is None:
                raise ConfigError(None, "agent", "this agent was not started from a file: nothing to re-read")
            new = load_topology(file, context=self.context)
        except ConfigError as exc:
            log.error("reload refused, the running pipeline is unchanged: %s", exc)
            self._record_reload(ok=False, error=str(exc))
            return None
        for warning in new.warnings:
            log.warning("%s", warning)
        try:
            plan = self.reload(new)
        except Exception as exc:  # noqa: BLE001 - a reload failure must not kill a running agent
            log.exception("reload failed")
            self._record_reload(ok=False, error=f"{type(exc).__name__}: {exc}")
            return None
        self._record_reload(ok=not plan.failed, error="; ".join(plan.failed) or None, plan=plan)
        return plan

    def _record_reload(self, ok: bool, error: str | None, plan: ReloadPlan | None = None) -> None:
        self.reloads += 1
        doc = {"generation": self.reloads, "ok": ok, "error": error, "time": round(time.time(), 3),
               "changes": plan.summary() if plan else None,
               "needs_restart": plan.needs_restart if plan else []}
        try:
            write_atomic(Path(self.context.data_dir) / RELOAD_FILE, json.dumps(doc).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s", RELOAD_FILE, exc.strerror or exc)

    def reload(self, new: Topology) -> ReloadPlan:
        """Go from the running topology to ``new`` (validated, built on this agent's context).

        Only what changed is replaced, in an order that loses nothing:

        1. replaced and removed sources stop (at a commit boundary; their checkpoints are saved);
        2. a removed channel is drained by its old sinks within ``shutdown_timeout``; what is left
           stays on disk (file channel, with a warning) or is reported lost (memory channel);
        3. replaced and removed sinks stop after their in-flight batch (it commits or rolls back);
        4. a replaced file channel on the same directory is closed, then reopened with the new
           settings (it replays its log); any other replaced channel hands its chunks to the new one;
        5. new channels, sinks (with their runners) and sources start.
        """
        with self._reload_lock:
            if self._stopped.is_set():
                raise RuntimeError("agent is stopping")
            old = self.topology
            plan = plan_reload(old, new)
            for key in plan.needs_restart:
                log.warning("reload: %s changed; it needs a restart (the running value is kept)", key)
            merged = {k: old.agent[k] for k in old.agent}
            merged.update({k: new.agent[k] for k in LIVE_AGENT_SETTINGS})
            new.agent = Values(merged)
            logging.getLogger().setLevel(new.agent.log_level)
            self.context.metrics.set_tap_token(new.agent.tap_token)
            for kind, starting in (("sources", plan.start_sources), ("channels", plan.start_channels),
                                   ("sinks", plan.start_sinks)):
                for name, spec in getattr(new, kind).items():
                    if name not in starting:
                        spec.component = getattr(old, kind)[name].component
            if plan.empty:
                self.topology = new
                log.info("reload: %s", plan.summary())
                return plan
            timeout = new.agent.shutdown_timeout
            for name in plan.stop_sources:
                self._stop_old("source", old.sources[name].component, lambda c: c.stop())
            for name in plan.stop_channels:
                if name not in new.channels:
                    self._drain_removed_channel(old.channels[name].component, timeout)
            for name in plan.stop_sinks:
                self._stop_sink(old.sinks[name].component, timeout)
            handovers: list[tuple[Channel, Channel]] = []
            for name in plan.stop_channels:
                gone = old.channels[name].component
                if name not in new.channels:
                    self._stop_old("channel", gone, lambda c: c.close())
                elif self._same_directory(gone, new.channels[name].component):
                    self._stop_old("channel", gone, lambda c: c.close())  # the new one replays its log
                else:
                    handovers.append((gone, new.channels[name].component))
            for kind, starting in (("sources", plan.start_sources), ("channels", plan.start_channels),
                                   ("sinks", plan.start_sinks)):
                for name in starting:
                    if name in getattr(old, kind):
                        carry(getattr(old, kind)[name].component, getattr(new, kind)[name].component)
            for name in plan.start_channels:
                self._start_new(new, "channel", name, plan)
            for name in plan.start_sinks:
                self._start_new(new, "sink", name, plan)
            for gone, successor in handovers:
                if successor.name not in new.channels:
                    log.warning("reload: channel %s: its replacement did not start; %d chunk(s) %s", gone.name,
                                gone.size_chunks(), "stay on disk" if gone.durable else "are lost (memory channel)")
                else:
                    moved = _hand_over(gone, successor)
                    log.info("reload: channel %s handed %d chunk(s) to its replacement", gone.name, moved)
                self._stop_old("channel", gone, lambda c: c.close())
            for name in plan.start_sources:
                self._start_new(new, "source", name, plan)
            self.topology = new
            status = self.context.metrics.status
            if status is not None:
                status.components = [s.component for specs in (new.sources, new.channels, new.sinks)
                                     for s in specs.values()]
            log.info("reload: %s; now %s", plan.summary(), "; ".join(new.flows()))
            return plan

    def _start_new(self, new: Topology, kind: str, name: str, plan: ReloadPlan) -> None:
        """Start one added or replacement component; one that cannot start is left out of the running
        topology (and so is what depends on it), reported in ``plan.failed``, and tried again by the
        next reload."""
        specs = getattr(new, kind + "s")
        spec = specs[name]
        wired = spec.values.channels if kind == "source" else [spec.values.channel] if kind == "sink" else []
        missing = [c for c in wired if c not in new.channels]
        try:
            if missing:
                raise StartupError(f"its channel {missing[0]} did not start")
            getattr(self, f"_start_{kind}")(new, name)
        except Exception as exc:  # noqa: BLE001 - one component must not take the running agent down
            reason = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
            log.error("reload: %ss.%s did not start, it stays stopped until a reload fixes it: %s",
                      kind, name, reason)
            self._safe(spec.component.close if kind == "channel" else spec.component.stop, kind, name)
            if spec.component in self._started:
                self._started.remove(spec.component)
            del specs[name]
            plan.failed.append(f"{kind}s.{name}: {reason}")

    def _stop_old(self, kind: str, component, stop) -> None:
        self._safe(lambda: stop(component), kind, component.name)
        if component in self._started:
            self._started.remove(component)

    def _stop_sink(self, sink, timeout: float) -> None:
        """Stop a sink after its in-flight batch: the runner commits it or rolls it back."""
        runners = [r for r in self.runners if r.sink is sink]
        for runner in runners:
            runner.stop(timeout=timeout)
            if not runner.join(0):
                log.warning("reload: sink %s still delivering after %.0fs; stopping it (the batch rolls back)",
                            sink.name, timeout)
            self.runners.remove(runner)
        self._safe(sink.flush, "sink", sink.name)
        self._stop_old("sink", sink, lambda c: c.stop())
        for runner in runners:
            runner.join(5)

    def _drain_removed_channel(self, channel: Channel, timeout: float) -> None:
        runners = [r for r in self.runners if r.channel is channel]
        for runner in runners:
            runner.drain()
        deadline = time.monotonic() + timeout
        for runner in runners:
            runner.join(max(0.0, deadline - time.monotonic()))
        left = channel.size_chunks()
        if left and channel.durable:
            log.warning("reload: removed channel %s was not drained within %.0fs; %d chunk(s) stay on disk in %s "
                        "and are delivered when a file channel with that directory is configured again",
                        channel.name, timeout, left, getattr(channel, "directory", "?"))
        elif left:
            log.warning("reload: removed memory channel %s was not drained within %.0fs; %d chunk(s) are lost",
                        channel.name, timeout, left)

    def _same_directory(self, old: Channel, new: Channel) -> bool:
        """Two file channels on one directory cannot both be open: the old one must close first."""
        if not (old.durable and new.durable):
            return False
        old_dir = getattr(old, "directory", None)
        new_dir = Path(new.config.dir) if new.config.get("dir") else Path(self.context.data_dir) / "channel" / new.name
        return old_dir is not None and Path(old_dir).resolve() == new_dir.resolve()

    def run_forever(self, signals: DaemonSignals | None = None) -> None:
        """Run until SIGTERM/SIGINT; a second signal exits at once.  SIGHUP reloads the config.

        ``signals`` are installed by the caller as early as it can (``logflume agent`` does so before
        reading the config), so a stop sent while the agent starts is kept, not fatal.
        """
        if signals is None:
            signals = DaemonSignals(log)
            signals.install()
        self.start()
        while signals.wait() == "reload":
            log.info("SIGHUP: reloading %s", self.topology.file)
            self.reload_from_file()
        self.stop()


def _hand_over(old: Channel, new: Channel) -> int:
    """Move every chunk of a quiescent channel into its replacement, in order, a capacity's worth at a time.

    Each run is committed to the new channel before it is committed out of the old one, so a crash
    in between duplicates at most one run (removed by archive) and loses nothing.
    """
    moved = 0
    output = ChannelOutput([new])
    limit = max(1, new.config.capacity // 2)
    while True:
        tx = old.transaction()
        batch, size = [], 0
        try:
            while size < limit:
                chunk = tx.take(timeout=0)
                if chunk is None:
                    break
                batch.append(chunk)
                size += len(chunk)
            output.deliver(batch)
            tx.commit()
        except BaseException:
            tx.rollback()
            raise
        moved += len(batch)
        if not batch:
            return moved
