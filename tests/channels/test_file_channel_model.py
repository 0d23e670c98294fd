"""The file channel against a model, driven by hypothesis through interleaved transactions,
checkpoints, clean reopens and crashes (the directory copied while open, no final checkpoint).

The model is a list of committed chunk ids in commit order plus the open
transactions; after a reopen or crash, open puts vanish and open takes come back.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.channels.file import FileChannel
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings


def make_chunk(i: int) -> Chunk:
    size = (i * 7919) % 3000
    return Chunk("h", "s", "Raw", i, "e", bytes([i % 251]) * size, tags={"i": str(i)})


class FileChannelModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="fch-model-"))
        self.generation = 0
        self.ch = self._open(self.root / "g0")
        self.queue: list[int] = []  # committed, not taken, in commit order
        self.seq: dict[int, int] = {}  # id -> commit sequence
        self.next_seq = 0
        self.next_id = 1
        self.open: list[tuple[object, str, list[int]]] = []  # (transaction, "put"|"take", ids)

    def _open(self, directory: Path) -> FileChannel:
        raw = {"dir": str(directory), "segment_size": "4KiB", "capacity": "1GiB", "checkpoint_interval": "1h"}
        ch = FileChannel("m", parse_settings(FileChannel.schema(), raw, "channels.m", None), Context())
        ch.start()
        return ch

    def _requeue(self, ids: list[int]) -> None:
        self.queue = sorted(self.queue + ids, key=self.seq.__getitem__)

    @rule(n=st.integers(1, 4))
    def begin_put(self, n: int) -> None:
        tx = self.ch.transaction()
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        for i in ids:
            tx.put(make_chunk(i))
        self.open.append((tx, "put", ids))

    @rule(n=st.integers(1, 4))
    def put_and_commit(self, n: int) -> None:
        self.begin_put(n)
        self._finish(len(self.open) - 1, True)

    @precondition(lambda self: self.queue)
    @rule(n=st.integers(1, 4))
    def begin_take(self, n: int) -> None:
        tx = self.ch.transaction()
        got = []
        for _ in range(n):
            c = tx.take()
            if c is None:
                break
            i = int(c.tags["i"])
            assert bytes(c.data) == bytes(make_chunk(i).data)
            got.append(i)
        assert got == self.queue[:len(got)], "take must return the head, in commit order"
        assert len(got) == min(n, len(self.queue))
        del self.queue[:len(got)]
        self.open.append((tx, "take", got))

    def _finish(self, index: int, commit: bool) -> None:
        tx, kind, ids = self.open.pop(index)
        if commit:
            tx.commit()
            if kind == "put":
                for i in ids:
                    self.seq[i] = self.next_seq
                    self.next_seq += 1
                self.queue += ids
        else:
            tx.rollback()
            if kind == "take":
                self._requeue(ids)

    def _indexes(self, kind: str) -> list[int]:
        return [n for n, (_tx, k, _ids) in enumerate(self.open) if k == kind]

    @precondition(lambda self: self._indexes("put"))
    @rule(k=st.integers(0, 3), commit=st.booleans())
    def finish_put(self, k: int, commit: bool) -> None:
        puts = self._indexes("put")
        self._finish(puts[k % len(puts)], commit)

    @precondition(lambda self: self._indexes("take"))
    @rule(k=st.integers(0, 3), commit=st.booleans())
    def finish_take(self, k: int, commit: bool) -> None:
        takes = self._indexes("take")
        self._finish(takes[k % len(takes)], commit)

    @rule()
    def peek_all(self) -> None:
        tx = self.ch.transaction()
        got = []
        while (c := tx.take()) is not None:
            got.append(int(c.tags["i"]))
        tx.rollback()
        assert got == self.queue

    @rule()
    def checkpoint(self) -> None:
        self.ch.checkpoint()

    @rule(crash=st.booleans())
    def reopen(self, crash: bool) -> None:
        if crash:
            self.generation += 1
            copy = self.root / f"g{self.generation}"
            shutil.copytree(self.ch.directory, copy, ignore=shutil.ignore_patterns("lock"))
            self.ch.stop()
            self.ch = self._open(copy)
        else:
            directory = self.ch.directory
            self.ch.stop()
            self.ch = self._open(directory)
        for _tx, kind, ids in self.open:
            if kind == "take":
                self._requeue(ids)
        self.open = []

    @invariant()
    def sizes_match(self) -> None:
        in_flight = [i for _tx, kind, ids in self.open if kind == "take" for i in ids]
        assert self.ch.size_chunks() == len(self.queue) + len(in_flight)
        assert self.ch.size_bytes() == sum(len(make_chunk(i).data) for i in self.queue + in_flight)

    def teardown(self) -> None:
        self.ch.stop()
        shutil.rmtree(self.root, ignore_errors=True)


FileChannelModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_file_channel_against_model = FileChannelModel.TestCase


def test_file_channel_against_model_random_walks():
    """Seeded random walks with weights hypothesis does not reach: many takes open and rolled back at once."""
    rnd = random.Random(4242)
    steps = [
        (3, lambda m: m.put_and_commit(rnd.randint(1, 4))),
        (1, lambda m: m.begin_put(rnd.randint(1, 3))),
        (4, lambda m: m.queue and m.begin_take(rnd.randint(1, 3))),
        (1, lambda m: m._indexes("put") and m.finish_put(rnd.randrange(4), rnd.random() < 0.7)),
        (4, lambda m: m._indexes("take") and m.finish_take(rnd.randrange(4), rnd.random() < 0.4)),
        (1, lambda m: m.peek_all()),
        (0.5, lambda m: m.checkpoint()),
        (0.5, lambda m: m.reopen(rnd.random() < 0.5)),
    ]
    weights = [w for w, _ in steps]
    for _ in range(40):
        machine = FileChannelModel()
        try:
            for _ in range(50):
                rnd.choices(steps, weights)[0][1](machine)
                machine.sizes_match()
            machine.peek_all()
        finally:
            machine.teardown()
