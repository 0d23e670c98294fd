"""Agent: runs one validated topology: channels, sink runners, sources.

Start order is channels, sinks, sources (so nothing is produced before it can
be consumed); stop order is the reverse: sources stop first, sinks drain what
the channels hold until ``shutdown_timeout``, then channels close.  Chunks left
in a durable channel are delivered after the next start; a memory channel's
are lost, which is why a graceful stop drains first.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

from agent.runner import ChannelOutput, SinkRunner
from logflume.errors import StartupError
from logflume.statefile import make_state_dir
from logflume.status import PipelineStatus
from logflume.topology import Topology

log = logging.getLogger("logflume.agent")


class Agent:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.context = topology.context
        self.runners: list[SinkRunner] = []
        self._started: list = []
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

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
                    self.context.metrics.serve(host, port)
                except OSError as exc:
                    raise StartupError(f"metrics endpoint {host}:{port}: {exc.strerror or exc}") from None
            for name, spec in topo.channels.items():
                self._start_component("channel", name, spec.component.start)
            for name, spec in topo.sinks.items():
                self._start_component("sink", name, spec.component.start)
                runner = SinkRunner(spec.component, topo.channels[spec.values.channel].component)
                runner.start()
                self.runners.append(runner)
            for name, spec in topo.sources.items():
                output = ChannelOutput([topo.channels[c].component for c in spec.values.channels])
                self._start_component("source", name, lambda c=spec.component, o=output: c.start(o))
        except BaseException:
            self.stop(timeout=0)
            raise
        log.info("agent %s started: %s", self.context.agent_name, "; ".join(topo.flows()))

    def _start_component(self, kind: str, name: str, start) -> None:
        spec = getattr(self.topology, kind + "s")[name]
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
        log.info("agent stopped")

    @staticmethod
    def _safe(fn, kind: str, name: str) -> None:
        try:
            fn()
        except Exception:
            log.exception("error stopping %s %s", kind, name)

    def run_forever(self) -> None:
        """Run until SIGTERM/SIGINT; a second signal exits at once."""
        signals_seen = []
        stop_requested = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            signals_seen.append(signum)
            if len(signals_seen) > 1:
                log.warning("second signal: exiting now")
                os._exit(128 + signum)
            log.info("signal %s: stopping (send again to exit at once)", signal.Signals(signum).name)
            stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not stop_requested.wait(0.5):
            pass
        self.stop()
