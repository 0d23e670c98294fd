"""Records search (DuckDB over demux output): filters, hourly histogram, provenance, hostile input refused."""

from __future__ import annotations

import json

import pytest

from hicc.records import HOUR_MS, Query, RecordSearch, SearchError

pytest.importorskip("duckdb")

T0 = 1_764_900_000_000  # 2025-12-05 02:00 UTC


@pytest.fixture
def demux(tmp_path):
    for dt, day in (("SysLog", "2025-12-05"), ("NginxAccess", "2025-12-05")):
        folder = tmp_path / dt / day
        folder.mkdir(parents=True)
        with open(folder / "part-00000.jsonl", "w") as f:
            for i in range(30):
                f.write(json.dumps({"_source": f"web-0{i % 3}", "_stream": "/var/log/x.log", "_offset": i * 100,
                                    "_timestamp": T0 + i * 10 * 60_000, "_datatype": dt,
                                    "message": f"{dt} event {i} 100%_done"}) + "\n")
    (tmp_path / "_errors" / "SysLog").mkdir(parents=True)
    return tmp_path


def test_filters_histogram_and_provenance(demux):
    search = RecordSearch(str(demux))
    assert search.datatypes() == ["NginxAccess", "SysLog"]
    everything = search.search(Query())
    assert everything.total == 60
    res = search.search(Query(datatype="SysLog", source="web-01", since="2025-12-05T03:00", until="2025-12-05T05:00"))
    assert {r["_source"] for r in res.records} == {"web-01"}
    assert all(T0 + HOUR_MS <= r["_timestamp"] < T0 + 3 * HOUR_MS for r in res.records)
    assert res.total == 4 and sum(n for _, n in res.histogram) == 4
    assert [h for h, _ in res.histogram] == [T0 + HOUR_MS, T0 + 2 * HOUR_MS]
    res = search.search(Query(text="EVENT 7 100%_DONE"))
    assert res.total == 2 and {r["_offset"] for r in res.records} == {700}
    assert search.search(Query(text="event 7 100%x")).total == 0, "% and _ in the text are literal"
    assert search.search(Query(source="web-0*", limit=5, offset=55)).records[-1]["_offset"] == 2900


@pytest.mark.parametrize("datatype", ["../etc", "*", "Sys'; DROP TABLE x; --", "_errors"])
def test_a_datatype_that_is_not_a_partition_name_is_refused(demux, datatype):
    with pytest.raises(SearchError, match="datatype"):
        RecordSearch(str(demux)).search(Query(datatype=datatype))


def test_quotes_in_text_are_data_and_bad_times_are_named(demux):
    search = RecordSearch(str(demux))
    assert search.search(Query(text="x' OR '1'='1")).total == 0
    with pytest.raises(SearchError, match="from: expected a date"):
        search.search(Query(since="yesterday"))


def test_a_long_search_is_stopped(demux):
    big = demux / "Big" / "2025-12-05"
    big.mkdir(parents=True)
    line = json.dumps({"_source": "s", "_timestamp": T0, "message": "y" * 200}) + "\n"
    with open(big / "part-00000.jsonl", "w") as f:
        f.write(line * 400_000)
    with pytest.raises(SearchError, match="longer than"):
        RecordSearch(str(demux), timeout=0.05).search(Query(datatype="Big", text="zzz"))


def test_parquet_parts_are_searched_too(demux):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    folder = demux / "JSON" / "2025-12-05"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"_source": "db-1", "_stream": "s", "_offset": 7, "_timestamp": T0,
                                          "_datatype": "JSON", "level": "error", "msg": "disk full on db-1"}]),
                   folder / "part-00000.parquet")
    res = RecordSearch(str(demux)).search(Query(text="disk full"))
    assert res.total == 1 and res.records[0]["_offset"] == 7 and res.records[0]["level"] == "error"
    assert res.histogram == [(T0, 1)]


def test_real_demux_output_is_searched_and_its_runs_shown(tmp_path):
    """Demux's Hive layout (datatype=/date=/hour=, Parquet) is searched, and its manifest read as archive's is."""
    from hicc.jobs import JobsView
    from hicc.pages import store_page
    from jobs.demux import load_spec, run
    from tests.jobs.conftest import make_sample_sinks

    expected = make_sample_sinks(tmp_path / "sink")
    out = tmp_path / "out"
    s = run(str(tmp_path / "sink"), str(out), load_spec(None, []))
    search = RecordSearch(str(out))
    assert set(search.datatypes()) == {e["datatype"] for e in expected.values()}
    res = search.search(Query(datatype="SysLog"))
    assert res.total == s.by_datatype["SysLog"]["records"] > 0 and res.records[0]["_datatype"] == "SysLog"
    runs = JobsView(None, None, str(out)).get()["demux_runs"]
    assert (runs.error, runs.batches, runs.inputs_done, runs.totals["records"]) == ("", 1, 2, s.records)
    page = store_page([], JobsView(None, None, str(out)).get(), 0)
    assert 'id="demuxruns"' in page and "input files demuxed" in page
