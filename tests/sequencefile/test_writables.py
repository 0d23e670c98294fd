"""VInt/VLong encoding against the table of Hadoop-produced bytes in docs/sequencefile.md."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logflume.sequencefile.writables import decode_vint, decode_vlong, encode_vint, encode_vlong, vint_size

HADOOP_VLONGS = [
    (0, "00"), (1, "01"), (127, "7f"), (128, "8f80"), (255, "8fff"), (256, "8e0100"),
    (65535, "8effff"), (65536, "8d010000"), (1000000, "8d0f4240"), (2147483647, "8c7fffffff"),
    (-1, "ff"), (-112, "90"), (-113, "8770"), (-129, "8780"), (-256, "87ff"), (-257, "860100"),
    (-2147483648, "847fffffff"), (-(2**63), "807fffffffffffffff"), (2**63 - 1, "887fffffffffffffff"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "hexbytes"), HADOOP_VLONGS)
def test_vlong_matches_hadoop(value: int, hexbytes: str) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode_vlong(value) == raw
    assert decode_vlong(raw, 0) == (value, len(raw))
    assert vint_size(raw[0]) == len(raw)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_vlong_round_trip(value: int) -> None:
    raw = encode_vlong(value)
    assert 1 <= len(raw) <= 9
    assert decode_vlong(b"junk" + raw, 4) == (value, 4 + len(raw))


def test_vint_range_is_checked() -> None:
    with pytest.raises(ValueError):
        encode_vint(2**31)
    with pytest.raises(ValueError, match="fit in an int"):
        decode_vint(encode_vlong(2**31), 0)
    with pytest.raises(IndexError):
        decode_vlong(bytes.fromhex("8c7fff"), 0)
