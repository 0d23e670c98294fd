"""Sink file naming: a datatype as a directory name (``{datatype}`` in a store's path)."""

from __future__ import annotations

import itertools
import random
import re

from logflume.chunk import MAX_DATATYPE_LEN, Chunk
from sinks.naming import MAX_DATATYPE_DIR, datatype_dir, is_hidden

#: Characters a datatype may hold (logflume/chunk.py).
CHARS = "abcXYZ019_.:@+=-"
#: A name every store takes as one path component: no '/', no ':' (HDFS), no '+', '@', '=', never hidden.
PORTABLE = re.compile(r"[A-Za-z0-9%-][A-Za-z0-9_.%-]*")


def test_safe_datatypes_keep_their_name_and_others_are_escaped_hive_style() -> None:
    assert datatype_dir("Raw") == "Raw"
    assert datatype_dir("nginx_access.v2-eu") == "nginx_access.v2-eu"
    assert datatype_dir("app:json") == "app%3Ajson"
    assert datatype_dir("a@b+c=d") == "a%40b%2Bc%3Dd"
    assert datatype_dir("") == "%00"  # never an empty path component
    assert datatype_dir(".x") == "%2Ex" and datatype_dir("_x") == "%5Fx"  # jobs skip hidden names


def test_distinct_datatypes_get_distinct_portable_names() -> None:
    names: dict[str, str] = {}
    rng = random.Random(19)
    samples = ["".join(p) for n in (1, 2, 3) for p in itertools.product(CHARS, repeat=n)]
    samples += ["".join(rng.choice(CHARS) for _ in range(rng.randint(1, MAX_DATATYPE_LEN))) for _ in range(3000)]
    samples += ["a" + ":" * (MAX_DATATYPE_LEN - 1), "a" + ":" * (MAX_DATATYPE_LEN - 2) + "b", "a" * MAX_DATATYPE_LEN]
    for dt in samples:
        d = datatype_dir(dt)
        assert PORTABLE.fullmatch(d), (dt, d)
        assert not is_hidden(d), f"jobs would skip {d!r}"
        assert len(d) <= MAX_DATATYPE_DIR < 255, (dt, d)
        assert names.setdefault(d, dt) == dt, f"{dt!r} and {names[d]!r} share the directory {d!r}"


def test_the_longest_escapes_are_bounded_and_tell_themselves_apart() -> None:
    worst = "a" + ":" * (MAX_DATATYPE_LEN - 1)  # every character but one escaped: 382 bytes
    assert Chunk("h", "s", worst, 1, "e", b"x").metadata_error() is None, "a datatype senders may send"
    d = datatype_dir(worst)
    assert len(d) <= MAX_DATATYPE_DIR and "%-" in d
    assert datatype_dir(worst) == d, "deterministic: the same directory after a restart"
    assert datatype_dir(worst[:-1] + "@") != d
