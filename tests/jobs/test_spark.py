"""The Spark engine (local[2]) gives the same records as the local engine, from the same sink files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jobs.demux import load_spec, run
from logflume.chunk import Chunk
from tests.jobs.conftest import SAMPLE_CONFIG, T0, make_sample_sinks, make_sink_set, run_cli
from tests.jobs.test_archive import _poison_file
from tests.jobs.test_demux import canonical, read_output

pytestmark = pytest.mark.spark


def test_local_and_spark_engines_agree(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    sink = tmp_path / "sink"
    expected = make_sample_sinks(sink)
    make_sink_set(tmp_path / "more", n_streams=4, lines=400, collectors=2, files_per_collector=2)
    for p in (tmp_path / "more").rglob("*.seq"):
        if not p.name.startswith(("_", ".")):
            p.rename(sink / "2025-11-24" / ("more-" + p.name))
    good = [Chunk("h", "poison", "Raw", 4, "e", b"ok!\n", timestamp=T0)]
    n_bad = _poison_file(sink / "2025-11-24" / "poison.seq", good)
    cfg = tmp_path / "demux.yaml"
    cfg.write_text(yaml.safe_dump(SAMPLE_CONFIG))
    local = run(str(sink), str(tmp_path / "local"), load_spec(str(cfg), []), workers=2, split_size=8192)
    r = run_cli("demux", "--engine", "spark", "--master", "local[2]", "--input", str(sink),
                "--output", str(tmp_path / "spark"), "--config", str(cfg), "--json", timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    spark = json.loads(r.stdout)
    assert spark["tasks"] >= 2
    assert (spark["chunks"], spark["records"], spark["errors"]) == (local.chunks, local.records, local.errors)
    assert spark["bad_chunks"] == local.bad_chunks == n_bad  # set aside, not fatal, on Spark too
    assert len(list((tmp_path / "spark" / "_errors" / "_chunks").glob("chunks-*.seq"))) >= 1
    got, want = read_output(tmp_path / "spark"), read_output(tmp_path / "local")
    assert canonical(got) == canonical(want)
    assert len(got[("SysLog", "2025-11-24")]) >= expected["syslog.log"]["records"]
