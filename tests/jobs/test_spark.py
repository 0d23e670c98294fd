"""``logflume demux --engine spark --master local[2]``: as a user runs it; same records as local, and exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.demux import load_spec, run
from logflume.chunk import Chunk
from tests.jobs.conftest import SAMPLE_CONFIG, T0, make_sample_sinks, run_cli
from tests.jobs.test_archive import _poison_file
from tests.jobs.test_demux import canonical, read_output

pytestmark = pytest.mark.spark


def test_spark_cli_agrees_with_local_and_a_rerun_adds_nothing(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    sink = tmp_path / "sink"
    make_sample_sinks(sink)
    n_bad = _poison_file(sink / "2025-11-24" / "poison.seq", [Chunk("h", "poison", "Raw", 4, "e", b"ok!\n",
                                                                    timestamp=T0)])
    cfg = tmp_path / "demux.yaml"
    cfg.write_text(yaml.safe_dump(SAMPLE_CONFIG))
    local = run(str(sink), str(tmp_path / "local"), load_spec(str(cfg), []), "jsonl", workers=2, split_size=4096)
    args = ("demux", "--engine", "spark", "--master", "local[2]", "--input", str(sink), "--output",
            str(tmp_path / "spark"), "--config", str(cfg), "--format", "jsonl", "--split-size", "4KiB", "--json")
    r = run_cli(*args, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    spark = json.loads(r.stdout)
    assert spark["engine"] == "spark" and spark["tasks"] == local.tasks > 2
    assert (spark["chunks"], spark["records"], spark["errors"]) == (local.chunks, local.records, local.errors)
    assert spark["bad_chunks"] == local.bad_chunks == n_bad  # set aside, not fatal, on Spark too
    assert canonical(read_output(tmp_path / "spark")) == canonical(read_output(tmp_path / "local"))
    assert not [p for p in (tmp_path / "spark").rglob(".*") if p.is_file()]  # nothing left staged
    manifest = json.loads((tmp_path / "spark" / "_manifest" / "manifest.json").read_text())
    assert manifest["job"] == "demux" and len(manifest["done"]) == 3
    # a re-run finds every input committed: it adds nothing (and starts no Spark job)
    again = run_cli(*args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert (second["skipped_files"], second["records"], second["output_files"]) == (3, 0, 0)
    assert canonical(read_output(tmp_path / "spark")) == canonical(read_output(tmp_path / "local"))
