"""Store groups: a collector store (``type: group``) that is a sink group over stores defined inline.

The processors are the agent's (``logflume.sinkgroup.SinkGroup``: ``failover``
by priority with a penalty, ``load_balance`` round robin or random with
backoff), with the same settings; only ``sinks`` differs: it holds the member
stores themselves (name -> store section, validated like a route's store)
instead of naming sinks of the file.  A batch is acknowledged once the member
that took it holds it durably (its ``deliver`` returned); when every member
failed the group raises and the agent sends the batch again.

A member that cannot start (an SFTP server away when the collector starts) does
not stop the collector while another member starts: it sits out like a member
that failed, and is started when its penalty is over.

The group publishes ``primary_up`` (and ``backlog_bytes``) under its own name,
as a ``buffer`` store does, so ``/status``'s ``store`` block says whether the
group can write to a primary: ``failover``, the member that takes the next
batch has its primary up; ``load_balance``, any member that takes batches has.
A member without a primary/secondary (``seqfile``) is up while it takes batches.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from collector.store import NestedSink, SinkConfig
from logflume.chunk import Chunk
from logflume.errors import ConfigError, StartupError
from logflume.settings import MapOf, Setting, SettingType
from logflume.sink import Sink
from logflume.sinkgroup import SinkGroup

#: The ``type`` of a store section that is a group.
GROUP_TYPE = "group"
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


class MemberStore(SettingType):
    """One member of a group: a store section (``{type: SINK, ...}``), validated as a route's store is."""

    expected = "a store mapping with a type ({type: buffer, ...})"

    def parse(self, value: Any, path: str, file: str | None) -> NestedSink:
        from collector.routing import parse_store  # routing builds groups: imported when a group is parsed

        if isinstance(value, dict) and "priority" in value:
            group, name = path.rsplit(".", 2)[0], path.rsplit(".", 1)[-1]
            raise ConfigError(file, f"{path}.priority", f"unknown key: a member's priority is the group's to give; "
                                                        f"expected {group}.priority: {{{name}: N, ...}}")
        return parse_store(value, path, file, member=True)

    def render(self, value: NestedSink) -> dict[str, Any]:
        return SinkConfig().render(value)


class StoreGroup(SinkGroup):
    """A collector store that hands each batch to one of its member stores (``SinkGroup``'s processors)."""

    counts_output = True  # a collector store, driven by no runner; its members count what each took
    settings: ClassVar[dict[str, Setting]] = {
        "sinks": Setting(MapOf(MemberStore()), doc="The member stores: name -> store section ({type: buffer, ...}),"
                                                   " at least two; priority names them"),
    }

    def configure(self) -> None:
        file = self.context.config_file
        if len(self.config.sinks) < 2:
            raise ConfigError(file, f"{self.name}.sinks", "expected at least 2 member stores")
        super().configure()
        members: list[Sink] = []
        for key, nested in self.config.sinks.items():
            name = f"{self.name}.sinks.{key}"  # the key path: in errors, metrics and /status
            if not _MEMBER_NAME.match(key):
                raise ConfigError(file, name, "expected a member name of letters, digits, '_' and '-'")
            try:
                members.append(nested.cls(name, nested.values, self.context))
            except ConfigError:
                raise
            except (ValueError, TypeError) as exc:
                raise ConfigError(file, name, str(exc)) from None
        self.attach(members, list(self.config.sinks))
        self._not_started: set[int] = set()  # indexes of members whose start failed
        # read when /status or /metrics is built: always the group's state now, not at the last batch
        self.metrics.gauge("primary_up", "1 while the group can write to a primary").set_function(
            lambda: 1.0 if self.primary_up else 0.0)
        self.metrics.gauge("backlog_bytes", "Bytes the members hold in their secondaries").set_function(
            lambda: float(sum(getattr(m.sink, "backlog_bytes", lambda: 0)() for m in self.members)))

    @property
    def member_types(self) -> list[str]:
        """Each member's store type, in ``members`` order."""
        return [n.type for n in self.config.sinks.values()]

    def _taking(self, now: float) -> list[bool]:
        """Per member (``members`` order): started and not penalized, so it takes batches."""
        return [i not in self._not_started and m.until <= now for i, m in enumerate(self.members)]

    @staticmethod
    def _member_primary_up(sink: Sink) -> bool:
        """A buffer store's own ``primary_up``; a store without a primary writes straight where it writes."""
        return bool(getattr(sink, "primary_up", True))

    @property
    def primary_up(self) -> bool:
        """True while the group can write to a primary (see the module doc)."""
        taking = [m for m, ok in zip(self.members, self._taking(time.monotonic()), strict=True) if ok]
        if self.config.processor == "failover":
            active = max(taking, key=lambda m: m.priority, default=None)
            return active is not None and self._member_primary_up(active.sink)
        return any(self._member_primary_up(m.sink) for m in taking)

    def start(self) -> None:
        errors = []
        for i, m in enumerate(self.members):
            try:
                m.sink.start()
            except Exception as exc:  # noqa: BLE001 - another member may take the batches meanwhile
                errors.append(f"{m.sink.name}: {exc}")
                self._not_started.add(i)
                self._penalize(m, time.monotonic())
                self.log.warning("store %s: member %s cannot start, leaving it out for now: %s",
                                 self.name, m.sink.name, exc)
        if len(self._not_started) == len(self.members):
            self.stop()
            raise StartupError(f"store {self.name}: no member could start: " + "; ".join(errors))

    def _start_waiting(self) -> None:
        """Start members whose start failed once their penalty is over (a failed start penalizes again)."""
        for i in sorted(self._not_started):
            m = self.members[i]
            now = time.monotonic()
            if m.until > now:
                continue
            try:
                m.sink.start()
            except Exception as exc:  # noqa: BLE001
                self._penalize(m, now)
                self.log.warning("store %s: member %s still cannot start: %s", self.name, m.sink.name, exc)
            else:
                self._not_started.discard(i)
                self.log.info("store %s: member %s started", self.name, m.sink.name)

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        nbytes = sum(len(c.data) for c in chunks)
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(nbytes)
        if self._not_started:
            self._start_waiting()
        try:
            super().deliver(chunks)
        except Exception:
            self.metrics.errors.inc()
            raise
        self.metrics.chunks_out.inc(len(chunks))
        self.metrics.bytes_out.inc(nbytes)

    def status(self) -> dict[str, Any]:
        """The group's view of each member (failures, penalty, whether it takes batches and its primary is up)
        with the member's own (``describe``), and the group's ``primary_up``."""
        out = super().status()
        out["primary_up"] = self.primary_up
        value = self.context.metrics.value
        taking = self._taking(time.monotonic())
        for i, (row, m, type_name) in enumerate(zip(out["sinks"], self.members, self.member_types, strict=True)):
            row.update({"store_type": type_name, "started": i not in self._not_started, "taking": taking[i],
                        "primary_up": self._member_primary_up(m.sink),
                        "bytes_out": value("bytes_out_total", kind="sink", component=m.sink.name),
                        "describe": m.sink.describe()})
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "processor": self.config.processor,
                "sinks": [{"name": m.sink.name, "priority": m.priority, **m.sink.describe()} for m in self.members]}
