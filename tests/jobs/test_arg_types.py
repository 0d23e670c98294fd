"""The jobs' option types: sizes and durations parse as config values do; a size below its floor is refused."""

from __future__ import annotations

import argparse

import pytest

from jobs.arg_types import duration_ms_arg, size_arg
from jobs.hidden_temp import hidden_temp


def test_size_with_a_floor():
    parse = size_arg(1024, "of at least 1KiB")
    assert parse("64MiB") == 64 << 20 and parse("1KiB") == 1024
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size of at least 1KiB"):
        parse("1000")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size such as 64MiB, got 'lots'"):
        parse("lots")


def test_duration_in_milliseconds():
    assert duration_ms_arg("1s") == 1000 and duration_ms_arg("250ms") == 250 and duration_ms_arg("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="expected a duration such as 1s or 500ms, got 'soon'"):
        duration_ms_arg("soon")


def test_hidden_temp_sits_beside_the_final_name():
    assert hidden_temp("s3://b/out/_errors/errors-000001.seq") == "s3://b/out/_errors/.errors-000001.seq.tmp"
