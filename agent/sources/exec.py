"""ExecSource: runs a command and turns its standard output into records.

The command is restarted by policy (``always``, ``on-failure``, ``never``) with
exponential backoff between starts; each run is a new epoch (its output's
offsets start again at 0).  The exit status is logged; stderr lines are logged
as warnings (not collected), so a failing command is visible to operators.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from typing import ClassVar

from logflume.chunking import RecordChunker, pump
from logflume.settings import AnyValue, Duration, Enum, Optional, Setting, Size, Str
from logflume.source import ThreadedSource


class ExecSource(ThreadedSource):
    settings: ClassVar[dict[str, Setting]] = {
        "command": Setting(AnyValue(), doc="Command: a string run by /bin/sh -c, or a list of arguments"),
        "stream": Setting(Optional(Str()), None, "Stream name (default: the command line)"),
        "restart": Setting(Enum("always", "on-failure", "never"), "on-failure", "When to run the command again"),
        "restart_delay": Setting(Duration(), "1s", "First delay before a restart (doubles per consecutive failure)"),
        "restart_max_delay": Setting(Duration(), "1m", "Cap of the restart delay"),
        "chunk_size": Setting(Size(min=1), "64MiB", "Largest chunk"),
        "flush_interval": Setting(Duration(), "500ms", "Send what was read after this long even if the chunk is small"),
        "caught_up_flush": Setting(Duration(), "20ms",
                                   "Once the pipe is drained, send complete records at the latest this long after "
                                   "the first unsent byte (0: off, only flush_interval)"),
        "partial_timeout": Setting(Duration(), "5s", "Send a record still missing its delimiter after this long"),
        "kill_timeout": Setting(Duration(), "5s", "On stop, SIGTERM the command, then SIGKILL after this long"),
    }

    def configure(self) -> None:
        cmd = self.config.command
        if isinstance(cmd, str) and cmd.strip():
            self.argv = ["/bin/sh", "-c", cmd]
            self.command_line = cmd
        elif isinstance(cmd, list) and cmd and all(isinstance(a, (str, int, float)) for a in cmd):
            self.argv = [str(a) for a in cmd]
            self.command_line = shlex.join(self.argv)
        else:
            raise ValueError("command: expected a non-empty string or a list of arguments")
        self.stream = self.config.stream or self.command_line
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.last_exit: int | None = None

    def run(self) -> None:
        delay = self.config.restart_delay
        while not self.stopping.is_set():
            started = time.monotonic()
            code = self._run_once()
            self.last_exit = code
            if self.stopping.is_set():
                return
            ok = code == 0
            if self.config.restart == "never" or (self.config.restart == "on-failure" and ok):
                self.log.info("command exited with status %s; not restarting (restart: %s)", code,
                              self.config.restart)
                return
            if time.monotonic() - started > 10 * delay:
                delay = self.config.restart_delay  # it ran a good while: reset the backoff
            self.log.warning("command exited with status %s; restarting in %.1fs", code, delay)
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, self.config.restart_max_delay)

    def _run_once(self) -> int:
        self.runs += 1
        try:
            self.proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            self.log.error("cannot run %s: %s", self.command_line, exc)
            self.metrics.errors.inc()
            return 127
        stderr_thread = threading.Thread(target=self._log_stderr, args=(self.proc,), daemon=True)
        stderr_thread.start()
        chunker = RecordChunker(
            source=self.context.agent_name, stream=self.stream, datatype=self.config.datatype,
            tags=self.config.tags, epoch=f"exec-{time.time_ns()}", chunk_size=self.config.chunk_size,
            flush_interval=self.config.flush_interval, partial_timeout=self.config.partial_timeout,
            caught_up_flush=self.config.caught_up_flush,
        )
        try:
            pump(self.proc.stdout.fileno(), chunker, self._deliver, self.stopping.is_set)
        finally:
            if self.stopping.is_set():
                self._terminate()
            code = self.proc.wait()
            self.proc.stdout.close()
            stderr_thread.join(timeout=1)
        return code

    def _log_stderr(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self.log.warning("stderr: %s", line.rstrip().decode(errors="replace"))
        proc.stderr.close()

    def _terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.config.kill_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _deliver(self, chunks: list) -> None:
        if chunks:
            self.output.deliver(chunks)
            self.metrics.chunks_out.inc(len(chunks))
            self.metrics.bytes_out.inc(sum(len(c) for c in chunks))

    def stop(self) -> None:
        self.stopping.set()
        self._terminate()
        super().stop()
