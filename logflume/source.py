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


class ThreadedSource(Source):
    """A source whose work is one loop in its own thread: implement :meth:`run`.

    ``run`` should return when ``self.stopping`` is set (check it between reads;
    use ``self.stopping.wait(t)`` to sleep).
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

        try:
            self.run()
        except ChannelClosed:
            pass
        except Exception:
            self.metrics.errors.inc()
            self.log.exception("source %s failed", self.name)

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
