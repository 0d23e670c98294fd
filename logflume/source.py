"""Source: turns outside data into chunks and hands them to its channel(s).

Contract: ``output.deliver(chunks)`` returns only after every chunk was
committed to every channel of the source; only then may the source advance
its checkpoint.  It blocks while a channel is full: that is back-pressure,
and a source slows down its input (stops reading a socket, stops tailing)
rather than dropping.  ``deliver`` raises ChannelClosed when the pipeline is
shutting down; the source then stops without advancing its checkpoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.component import Component
from logflume.errors import ConfigError
from logflume.settings import ListOf, MapOf, Setting, Str


def _metadata_problem(datatype: str = "Raw", tags: dict[str, str] | None = None, source: str = "x") -> str | None:
    """What ``Chunk.metadata_error`` says of chunks with this source, datatype and tags (collectors refuse those)."""
    return Chunk(source=source, stream="x", datatype=datatype, seq_id=0, epoch="", data=b"",
                 tags=tags or {}).metadata_error()


class SourceName(Str):
    """The agent name, stamped as ``source`` on every chunk."""

    def parse(self, value, path, file):
        text = super().parse(value, path, file)
        problem = _metadata_problem(source=text)
        if problem:
            raise ConfigError(file, path, f"expected a source name collectors accept: {problem}")
        return text


class DatatypeName(Str):
    expected = "a datatype name (letters, digits and _.:@+=-, starting with a letter or digit)"

    def parse(self, value, path, file):
        text = super().parse(value, path, file)
        problem = _metadata_problem(datatype=text)
        if problem:
            raise ConfigError(file, path, f"expected a datatype collectors accept: {problem}")
        return text


class ChunkTags(MapOf):
    def parse(self, value, path, file):
        tags = super().parse(value, path, file)
        problem = _metadata_problem(tags=tags)
        if problem:
            raise ConfigError(file, path, f"expected tags collectors accept: {problem}")
        return tags


class SourceOutput:
    """Where a source delivers; the runtime provides it (fan-out to several channels)."""

    def deliver(self, chunks: Sequence[Chunk], timeout: float | None = None) -> None:
        """Commit ``chunks`` to every channel; with ``timeout``, raise ChannelFull if a full
        channel made a put wait that long (for sources that answer senders, e.g. HTTP 429)."""
        raise NotImplementedError


class Source(Component):
    kind: ClassVar[str] = "source"
    settings: ClassVar[dict[str, Setting]] = {
        "channels": Setting(ListOf(Str(), min_items=1), doc="Channel(s) this source writes to (each gets every chunk)"),
        "datatype": Setting(DatatypeName(), "Raw", "Datatype set on every chunk (decides the demux processor)"),
        "tags": Setting(ChunkTags(Str()), {}, "Tags set on every chunk"),
    }

    output: SourceOutput

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        """Begin producing into ``output``; must return promptly (spawn threads if needed)."""
        raise NotImplementedError


#: Waits before a failed ThreadedSource's ``run`` is called again: doubling from the first to the last.
RESTART_FIRST, RESTART_MAX = 1.0, 60.0


class ThreadedSource(Source):
    """A source whose work is one loop in its own thread: implement :meth:`run`.

    ``run`` should return when ``self.stopping`` is set (check it between reads;
    use ``self.stopping.wait(t)`` to sleep).  If it raises (a bug, an OS error it
    did not expect), the error is logged and counted and ``run`` is called again
    after a backoff (1 s, doubling to 60 s; reset once it ran a minute): an agent
    must not go on running with a source that silently stopped collecting.
    ``run`` must therefore be able to start again from its own state (what it
    committed, its checkpoints), as Flume's source runners restart theirs.
    """

    def __init__(self, *args, **kwargs) -> None:
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(*args, **kwargs)

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        self.output = output
        self.stopping.clear()
        self._thread = threading.Thread(target=self._main, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        from logflume.errors import ChannelClosed

        delay = RESTART_FIRST
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.run()
                return
            except ChannelClosed:
                return
            except Exception:
                self.metrics.errors.inc()
                if time.monotonic() - started >= RESTART_MAX:
                    delay = RESTART_FIRST  # it ran a good while: a new failure, not the same one again
                self.log.exception("source %s failed; starting it again in %.0fs", self.name, delay)
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX)

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
