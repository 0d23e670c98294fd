"""Every channel, built in or not, keeps the channel contract (logflume.testing.channel_contract).

One subclass per built-in channel; a third-party channel's package runs the
same suite on its own channel (docs/plugins.md).
"""

from __future__ import annotations

import pytest

from agent.channels.file import FileChannel
from agent.channels.filelog.segments import list_segments
from agent.channels.memory import MemoryChannel
from logflume.component import Context
from logflume.errors import ChannelClosed
from logflume.registry import BUILTINS, resolve
from logflume.settings import parse_settings
from logflume.testing.channel_contract import ChannelContract, ids, take_all


class TestMemoryChannelContract(ChannelContract):
    def make_channel(self, capacity: str) -> MemoryChannel:
        cfg = parse_settings(MemoryChannel.schema(), {"capacity": capacity}, "channels.m", None)
        ch = MemoryChannel("m", cfg, Context(data_dir=self.tmp_path))
        ch.start()
        return ch


class TestFileChannelContract(ChannelContract):
    """The channel contract (logflume.testing.channel_contract), plus what durability adds to it."""

    def make_channel(self, capacity: str, **raw) -> FileChannel:
        raw.setdefault("dir", str(self.tmp_path / f"ch{len(self.made)}"))
        cfg = parse_settings(FileChannel.schema(), {"capacity": capacity, "segment_size": "8KiB",
                                                    "checkpoint_interval": "20ms", **raw}, "channels.f", None)
        ch = FileChannel("f", cfg, Context(data_dir=self.tmp_path / "data"))
        ch.start()
        return ch

    def test_rolled_back_put_is_gone_and_releases_capacity(self):
        super().test_rolled_back_put_is_gone_and_releases_capacity()
        ch = self.made[0]
        ch.stop()
        again = self.make_channel("20", dir=str(ch.directory))
        self.made.append(again)
        assert ids(take_all(again)) == [2, 3], "a rolled-back put must not come back on reopen"

    def test_close_wakes_waiting_taker_and_putter(self):
        super().test_close_wakes_waiting_taker_and_putter()
        with pytest.raises(ChannelClosed):
            self.made[0].transaction().take()

    def test_concurrent_producers_and_consumers_lose_and_duplicate_nothing(self):
        super().test_concurrent_producers_and_consumers_lose_and_duplicate_nothing()
        ch = self.made[0]
        ch.checkpoint()
        assert len(list_segments(ch.directory)) <= 2, "consumed segments must be deleted"


def test_every_built_in_channel_runs_the_contract():
    covered = {cls.make_channel.__annotations__["return"] for cls in ChannelContract.__subclasses__()
               if cls.__module__ == __name__}
    for name in BUILTINS["channel"]:
        assert resolve("channel", name).__name__ in covered, f"channel {name!r} has no contract test here"
