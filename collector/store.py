"""BufferStore: Scribe's buffer store, made safer: a primary sink, a local secondary, replay in order.

While the primary works, batches go to it.  The first failed write switches the
store to the secondary at once, and the failed batch is written there before
``deliver`` returns, so no acknowledged batch depends on the primary.  A replay
thread retries the primary every ``retry_interval`` (with jitter); once it
answers, the secondary's files are replayed to it oldest first, each deleted
only after the primary confirmed every chunk in it.  New batches keep going to
the secondary until the backlog is drained, so chunks of one stream reach the
primary in the order they came.  A full secondary answers ``TryLater``:
nothing is ever dropped.

Replay is at-least-once: if the primary fails during a replay batch, that batch
is sent again (a bounded duplicate that archive removes).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from logflume.chunk import Chunk
from logflume.errors import ConfigError, DeliveryError, StartupError, TryLater
from logflume.registry import resolve
from logflume.sequencefile import SequenceFileError, SequenceFileReader
from logflume.settings import (
    Duration,
    Float,
    Obj,
    Optional,
    Setting,
    SettingType,
    Size,
    Str,
    Values,
    parse_settings,
    render_settings,
)
from logflume.sink import Sink
from logflume.statefile import make_state_dir, remove_durably, write_atomic
from sinks.seqfile import SeqFileSink

_SECONDARY_FILE = re.compile(r"^(\d{16})\.seq$")
_PROGRESS = "replay.progress"
#: Per-chunk bytes a secondary record adds to the chunk's data (framing, key JSON), for the capacity check.
_RECORD_OVERHEAD = 512


@dataclass(frozen=True)
class NestedSink:
    """A sink config inside another component's config, validated with the rest of the file."""

    type: str
    cls: type[Sink]
    values: Values


class SinkConfig(SettingType):
    """A nested sink: ``{type: NAME, ...settings}`` (type defaults to ``default_type``) or a URL string."""

    expected = "a sink config mapping ({type: NAME, ...}) or a URL"

    def __init__(self, default_type: str = "seqfile") -> None:
        self.default_type = default_type

    def parse(self, value: Any, path: str, file: str | None) -> NestedSink:
        if isinstance(value, str) and value:
            value = {"url": value}
        if not isinstance(value, dict):
            raise self._fail(value, path, file)
        raw = dict(value)
        type_name = raw.pop("type", self.default_type)
        if not isinstance(type_name, str) or not type_name:
            raise ConfigError(file, f"{path}.type", "expected a sink type name")
        cls = resolve("sink", type_name, file, path)
        raw.setdefault("channel", "-")  # a nested sink takes from its parent, not from a channel
        return NestedSink(type_name, cls, parse_settings(cls.schema(), raw, path, file))

    def render(self, value: NestedSink) -> dict[str, Any]:
        out = {"type": value.type, **render_settings(value.cls.schema(), value.values)}
        out.pop("channel", None)
        return out


class _Stopping(Exception):
    """The store is stopping: leave the replay where it is (its progress is saved)."""


class SecondaryFiles(SeqFileSink):
    """The secondary: a local SeqFileSink whose files are numbered, so replay order never depends on clocks.

    Never partitioned by datatype: one backlog in arrival order, one open file; replaying it through a
    primary with ``{datatype}`` in its path puts each chunk in its datatype's file there.

    Layout: ``<dir>/<16-digit sequence>.seq`` (``.<name>.inprogress`` while written).
    """

    inprogress_glob = ".*.seq.inprogress"
    final_glob = "*.seq"
    private_files = True  # buffered chunks of private logs

    def configure(self) -> None:
        super().configure()
        self._seq = 0

    def owns(self, final_rel: str) -> bool:
        return bool(_SECONDARY_FILE.match(final_rel))

    def next_name(self, datatype: str = "") -> str:
        self._seq += 1
        return f"{self._seq:016d}.seq"

    def start(self) -> None:
        make_state_dir(self.local_root)
        numbers = [int(m.group(1)) for name in os.listdir(self.local_root)
                   if (m := _SECONDARY_FILE.match(name.lstrip(".").removesuffix(".inprogress")))]
        self._seq = max(numbers, default=0)
        super().start()

    def finished(self) -> list[str]:
        """Closed files, oldest first."""
        return sorted(n for n in os.listdir(self.local_root) if _SECONDARY_FILE.match(n))

    def disk_bytes(self) -> int:
        """Bytes of every sink file in the directory, closed or in progress."""
        total = 0
        with os.scandir(self.local_root) as it:
            for entry in it:
                if entry.name.endswith((".seq", ".inprogress")):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:  # replayed and deleted, or renamed at roll, just now
                        pass
        return total


class BufferStore(Sink):
    """Writes to ``primary``; on failure to the local ``secondary``, replayed to the primary when it is back."""

    counts_output = True

    settings: ClassVar[dict[str, Setting]] = {
        "channel": Setting(Str(), "", "Channel this sink takes from (not needed when it is a collector's store)"),
        "primary": Setting(SinkConfig(), doc="Sink config of the primary (type defaults to seqfile; a URL string "
                                             "is short for {type: seqfile, url: URL}); may be a collector sink"),
        "secondary": Setting(Obj({
            "dir": Setting(Str(), doc="Local directory for the backlog"),
            "max_bytes": Setting(Size(min=1), "10GiB", "Backlog size at which the store answers TRY_LATER"),
            "file_size": Setting(Size(min=1), "64MiB", "Roll backlog files at this size (replay deletes whole files)"),
        }, shorthand="dir"), doc="Where batches go while the primary is down"),
        "retry_interval": Setting(Duration(), "30s", "How often to retry a failed primary"),
        "retry_jitter": Setting(Float(min=0), 0.2, "Randomize each retry wait by up to this fraction (+/-)"),
        "replay_rate": Setting(Optional(Size(min=1)), None, "Replay at most this many bytes per second (null: no cap)"),
    }

    def configure(self) -> None:
        file = self.context.config_file
        nested: NestedSink = self.config.primary
        self.primary: Sink = nested.cls(f"{self.name}.primary", nested.values, self.context)
        sec = self.config.secondary
        if self.config.retry_jitter >= 1:
            raise ConfigError(file, f"{self.name}.retry_jitter", "expected a fraction below 1")
        if "{" in sec.dir:
            raise ConfigError(file, f"{self.name}.secondary.dir", "expected a plain directory: the secondary is one "
                              "backlog for every datatype, replayed in order (a {datatype} in the primary's path "
                              f"sorts it there), got {sec.dir!r}")
        sec_values = parse_settings(SecondaryFiles.schema(), {
            "url": os.path.abspath(sec.dir), "roll_size": sec.file_size, "roll_interval": "1h",
            "sync": "every_batch", "compression": "NONE", "collector_name": "secondary", "staging": "never",
        }, f"{self.name}.secondary", file)
        self.secondary = SecondaryFiles(f"{self.name}.secondary", sec_values, self.context)
        if isinstance(self.primary, SeqFileSink) and not self.primary.remote and \
                os.path.abspath(self.primary.local_root) == os.path.abspath(sec.dir):
            raise ConfigError(file, f"{self.name}.secondary.dir", "must differ from the primary's directory")
        self._lock = threading.Lock()  # deliver, and the replay thread's switch back to the primary
        self._wake = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_primary = False
        self._primary_started = False
        self._next_retry = 0.0
        self._rate_clock = 0.0
        self._m_up = self.metrics.gauge("primary_up", "1 while chunks go straight to the primary, 0 while buffering")
        self._m_backlog = self.metrics.gauge("backlog_bytes", "Bytes waiting in the secondary for replay")
        self._m_replayed = self.metrics.counter("replayed_bytes", "Chunk bytes replayed from the secondary")
        self._m_replayed_files = self.metrics.counter("replayed_files", "Secondary files replayed and deleted")
        self._m_failovers = self.metrics.counter("failovers", "Times the primary failed and writes moved")
        self._m_try_later = self.metrics.counter("secondary_full", "Batches refused because the secondary was full")
        self._m_progress = self.metrics.gauge("replay_progress_records",
                                              "Records of the oldest secondary file already replayed")

    # -- plugin surface -----------------------------------------------------

    def writes(self) -> list[str]:
        return [*self.primary.writes(), *self.secondary.writes()]

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "primary": self.primary.describe(),
                "secondary": self.secondary.local_root, "primary_up": self._on_primary,
                "backlog_bytes": self.backlog_bytes()}

    @property
    def primary_up(self) -> bool:
        """True while batches go straight to the primary (no backlog)."""
        return self._on_primary

    def backlog_bytes(self) -> int:
        return self.secondary.disk_bytes() if os.path.isdir(self.secondary.local_root) else 0

    def start(self) -> None:
        self._stop.clear()
        try:
            self.secondary.start()
        except StartupError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"store {self.name}: secondary {self.secondary.local_root}: {exc}") from exc
        try:
            self.primary.start()
            self._primary_started = True
        except Exception as exc:  # noqa: BLE001 - a primary that is away at start is what the secondary is for
            self.log.warning("store %s: primary not available at start, buffering to %s: %s",
                             self.name, self.secondary.local_root, exc)
            self._next_retry = self._retry_at()
        backlog = self.backlog_bytes()
        self._on_primary = self._primary_started and backlog == 0
        self._m_up.set(1 if self._on_primary else 0)
        self._m_backlog.set(backlog)
        self._thread = threading.Thread(target=self._replay_loop, name=f"store-replay-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        with self._lock:
            for part in (self.primary, self.secondary):
                try:
                    part.stop()
                except Exception as exc:  # noqa: BLE001 - stop the other part anyway
                    self.log.warning("store %s: stopping %s failed: %s", self.name, part.name, exc)
            self._primary_started = False

    def flush(self) -> None:
        with self._lock:
            (self.primary if self._on_primary else self.secondary).flush()

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        nbytes = sum(len(c.data) for c in chunks)
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(nbytes)
        with self._lock:
            if self._on_primary:
                try:
                    self.primary.deliver(chunks)
                except Exception as exc:  # noqa: BLE001 - any failure of the primary moves writes to the secondary
                    self._fail_over(exc)
                else:
                    self._delivered(chunks, nbytes)
                    return
            backlog = self.backlog_bytes()
            need = nbytes + _RECORD_OVERHEAD * len(chunks)
            if backlog + need > self.config.secondary.max_bytes:
                self._m_try_later.inc()
                raise TryLater(f"store {self.name}: secondary full ({backlog} of {self.config.secondary.max_bytes}"
                               f" bytes) while the primary is down", min(self.config.retry_interval, 5.0))
            try:
                self.secondary.deliver(chunks)
            except Exception as exc:
                self.metrics.errors.inc()
                raise DeliveryError(f"store {self.name}: primary down and secondary write failed: {exc}") from exc
            self._m_backlog.set(self.backlog_bytes())
            self._delivered(chunks, nbytes)

    # -- internals ------------------------------------------------------------

    def _delivered(self, chunks: Sequence[Chunk], nbytes: int) -> None:
        self.metrics.chunks_out.inc(len(chunks))
        self.metrics.bytes_out.inc(nbytes)

    def _retry_at(self) -> float:
        jitter = self.config.retry_jitter
        return time.monotonic() + self.config.retry_interval * random.uniform(1 - jitter, 1 + jitter)

    def _fail_over(self, exc: BaseException) -> None:
        self.log.warning("store %s: primary failed, writing to secondary %s: %s",
                         self.name, self.secondary.local_root, exc)
        self.metrics.errors.inc()
        self._m_failovers.inc()
        self._on_primary = False
        self._m_up.set(0)
        self._next_retry = self._retry_at()
        with self._wake:
            self._wake.notify_all()

    def _replay_loop(self) -> None:
        while not self._stop.is_set():
            if self._on_primary:
                with self._wake:
                    if self._on_primary and not self._stop.is_set():
                        self._wake.wait(1.0)
                continue
            wait = self._next_retry - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, 1.0))
                continue
            try:
                if not self._primary_started:
                    self.primary.start()
                    self._primary_started = True
                self._drain()
            except Exception as exc:  # noqa: BLE001 - any failure: the primary is still down
                if self._stop.is_set():
                    return
                self.metrics.retries.inc()
                self.log.warning("store %s: primary still unavailable, next retry in ~%.0fs: %s",
                                 self.name, self.config.retry_interval, exc)
                self._next_retry = self._retry_at()

    def _drain(self) -> None:
        """Replay every secondary file to the primary, oldest first; switch back once none is left."""
        while not self._stop.is_set():
            files = self.secondary.finished()
            if not files:
                with self._lock:
                    if self.secondary.open_file_bytes:
                        self.secondary.roll()
                        continue
                    if self.secondary.finished():
                        continue
                    self._on_primary = True
                    self._m_up.set(1)
                    self._m_backlog.set(self.backlog_bytes())
                    self._m_progress.set(0)
                    self.log.info("store %s: backlog replayed, writing to the primary again", self.name)
                return
            self._replay_file(files[0])

    def _replay_file(self, name: str) -> None:
        path = os.path.join(self.secondary.local_root, name)
        progress_path = os.path.join(self.secondary.local_root, _PROGRESS)
        done = self._load_progress(progress_path, name)
        cfg = self.config
        batch: list[Chunk] = []
        batch_bytes = 0
        index = 0
        broken: SequenceFileError | None = None
        with open(path, "rb") as f:
            reader = SequenceFileReader(f)
            chunks = reader.iter_chunks()
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except SequenceFileError as exc:
                    broken = exc
                    break
                index += 1
                if index <= done:
                    continue
                if batch and (batch_bytes + len(chunk.data) > cfg.batch_bytes or len(batch) >= cfg.batch_chunks):
                    self._replay_batch(batch, batch_bytes, progress_path, name, index - 1)
                    batch, batch_bytes = [], 0
                batch.append(chunk)
                batch_bytes += len(chunk.data)
                if self._stop.is_set():
                    return
            if batch:
                self._replay_batch(batch, batch_bytes, progress_path, name, index)
        # Forget the progress before the file: a crash in between replays the file again (duplicates),
        # never skips records of a later file that reuses the name.
        remove_durably(progress_path)
        if broken is not None:  # never delete what could not be read: set it aside for a person
            aside = os.path.join(self.secondary.local_root, "corrupt")
            make_state_dir(aside)
            target = os.path.join(aside, name)
            if os.path.exists(target):
                target += f".{time.time_ns()}"
            os.rename(path, target)
            self.log.error("store %s: secondary file %s is damaged after record %d (%s); moved to %s",
                           self.name, path, index, broken, target)
        else:
            remove_durably(path)
        self._m_replayed_files.inc()
        self._m_progress.set(0)
        self._m_backlog.set(self.backlog_bytes())

    def _replay_batch(self, batch: list[Chunk], nbytes: int, progress_path: str, name: str, upto: int) -> None:
        rate = self.config.replay_rate
        if rate:
            now = time.monotonic()
            self._rate_clock = max(self._rate_clock, now)
            if self._rate_clock > now and self._stop.wait(self._rate_clock - now):
                raise _Stopping
            self._rate_clock += nbytes / rate
        self.primary.deliver(batch)  # returns once the primary holds the batch durably
        self._m_replayed.inc(nbytes)
        self._m_progress.set(upto)
        write_atomic(progress_path, json.dumps({"file": name, "records": upto}).encode())

    def _load_progress(self, progress_path: str, name: str) -> int:
        try:
            with open(progress_path) as f:
                data = json.load(f)
            return int(data["records"]) if data.get("file") == name else 0
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0
