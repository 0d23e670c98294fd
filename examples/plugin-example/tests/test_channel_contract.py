"""The SQLite channel keeps logflume's channel contract, and what it committed survives a reopen."""

from __future__ import annotations

from logflume_example.channel import SqliteChannel

from logflume.component import Context
from logflume.settings import parse_settings
from logflume.testing.channel_contract import ChannelContract, ids, put, take_all


class TestSqliteChannel(ChannelContract):
    def make_channel(self, capacity: str, path: str = "") -> SqliteChannel:
        path = path or str(self.tmp_path / f"ch{len(self.made)}.db")
        cfg = parse_settings(SqliteChannel.schema(), {"capacity": capacity, "path": path}, "channels.q", None)
        ch = SqliteChannel("q", cfg, Context(data_dir=self.tmp_path / "data"))
        ch.start()
        return ch

    def test_committed_chunks_survive_a_reopen(self):
        ch = self.channel()
        put(ch, 0, 1, 2)
        tx = ch.transaction()
        tx.take()  # taken, not committed: comes back
        ch.stop()
        again = self.make_channel("64MiB", path=str(self.tmp_path / "ch0.db"))
        self.made.append(again)
        assert ids(take_all(again)) == [0, 1, 2]
