"""``size_arg``: the jobs' size options parse as config sizes do and refuse what is below their floor."""

from __future__ import annotations

import argparse

import pytest

from jobs.hidden_temp import hidden_temp
from jobs.size_arg import size_arg


def test_size_with_a_floor():
    parse = size_arg(1024, "of at least 1KiB")
    assert parse("64MiB") == 64 << 20 and parse("1KiB") == 1024
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size of at least 1KiB"):
        parse("1000")
    with pytest.raises(argparse.ArgumentTypeError, match="expected a size such as 64MiB, got 'lots'"):
        parse("lots")


def test_hidden_temp_sits_beside_the_final_name():
    assert hidden_temp("s3://b/out/_errors/errors-000001.seq") == "s3://b/out/_errors/.errors-000001.seq.tmp"
