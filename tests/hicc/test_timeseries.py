"""HICC's time series stays within its window and its size cap; rates come from counter differences."""

from __future__ import annotations

from hicc.timeseries import Sample, TimeSeries


def test_window_and_rates(tmp_path):
    ts = TimeSeries(str(tmp_path / "t.sqlite"), retention=600, max_bytes=64 * 1024 * 1024)
    for i in range(200):  # one sample every 10 s for 2000 s; 1 MB/s
        ts.append([Sample("a:1", True, bytes_out=1e6 * 10 * i, lag=5.0)], t=1000.0 + 10 * i)
    assert ts.rows() <= 600 / 10 + 30 + 1, "trimmed to the retention window (checked every 30 appends)"
    series = ts.series(["a:1"], window=600, buckets=10, now=1000.0 + 10 * 199)
    rates = [rate for _, rate, _, _ in series["a:1"] if rate]
    assert rates and all(abs(r - 1e6) < 1 for r in rates)
    assert all(lag == 5.0 for _, _, lag, _ in series["a:1"])
    # Buckets narrower than the poll interval (5 s against 10 s): each holds one sample or none, and the
    # rate still comes out right, never a zig-zag of zeros.
    narrow = ts.series(["a:1"], window=600, buckets=120, now=1000.0 + 10 * 199)["a:1"]
    assert len(narrow) >= 50 and all(abs(rate - 1e6) < 1 for _, rate, _, _ in narrow)


def test_size_cap(tmp_path):
    ts = TimeSeries(str(tmp_path / "t.sqlite"), retention=10**9, max_bytes=1024 * 1024)
    for i in range(300):
        ts.append([Sample(f"agent-{k}:9464", True, 1.0, 2.0, 3.0) for k in range(100)], t=float(i))
    assert ts.size_bytes() <= 2 * 1024 * 1024
    assert ts.rows() < 300 * 100
