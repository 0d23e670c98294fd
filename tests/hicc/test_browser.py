"""The console in a real browser: a collector, two agents and HICC on loopback, logs archived and demuxed.

Checks on screen what an operator asks first (agents up, a stream's lag, a
searched record with its provenance), then kills the collector and watches the
console show it down.  Screenshots of every page are saved (see the
``artifacts`` fixture).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.hicc.conftest import answers, get_json, pipeline_configs, text_of, texts_of, wait_for

pytestmark = pytest.mark.timeout(180)


def run_job(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "logflume", *args, "--no-progress"] if args[0] == "demux"
                   else [sys.executable, "-m", "logflume", *args], cwd=REPO, check=True, timeout=120,
                   capture_output=True)


def test_console_in_a_browser(tmp_path, logflume_proc, browser, artifacts):
    from selenium.webdriver.common.by import By

    p = pipeline_configs(tmp_path, agents=2)
    collector = logflume_proc(["collector", "-c", p["collector"]], name="collector")
    wait_for(lambda: answers(f"http://127.0.0.1:{p['collector_metrics']}/health"), 30, message="collector up")
    for a in p["agents"]:
        logflume_proc(["agent", "-c", a["config"]], name=a["name"])
    wait_for(lambda: all(answers(f"http://127.0.0.1:{a['metrics']}/health") for a in p["agents"]), 30,
             message="agents up")
    hicc = logflume_proc(["hicc", "-c", p["hicc"]], name="hicc")
    base = f"http://127.0.0.1:{p['hicc_port']}"
    wait_for(lambda: answers(base + "/api/targets"), 30, message="hicc up")

    sizes = {}
    for i, a in enumerate(p["agents"], 1):
        log = a["logs"] / "app.log"
        log.write_text("".join(f"web-0{i} request {n} status=200\n" for n in range(500))
                       + ("payment failed for order needle-4242 status=500\n" if i == 2 else ""))
        sizes[a["name"]] = log.stat().st_size

    def delivered():
        return all(get_json(f"http://127.0.0.1:{a['metrics']}/status")["totals"]["bytes_out"] >= sizes[a["name"]]
                   for a in p["agents"])

    wait_for(delivered, 60, interval=0.2, message="both logs delivered")
    wait_for(lambda: all(f["open_file_bytes"] == 0 for f in get_json(
        f"http://127.0.0.1:{p['collector_metrics']}/status")["store"]["files"]), 30, interval=0.2,
        message="the sink file closed")
    run_job("archive", "--input", str(p["store"]), "--output", str(p["archive"]))
    run_job("demux", "--input", str(p["archive"]), "--output", str(p["demux"]))
    wait_for(lambda: all(t["state"] == "up" for t in get_json(base + "/api/targets")), 30, message="all up")

    # Pipeline: both agents and the collector, up.
    browser.get(base + "/")
    agents = text_of(browser, By.ID, "agents")
    assert "web-01" in agents and "web-02" in agents
    assert agents.count("UP") == 2, agents
    assert "collector-1" in text_of(browser, By.ID, "collectors")
    assert "are up and delivering" in text_of(browser, By.ID, "problems")
    browser.save_screenshot(str(artifacts / "1-pipeline.png"))

    # Streams: each log file with its lag (all delivered: 0 B).
    browser.get(base + "/streams")
    rows = texts_of(browser, By.CSS_SELECTOR, "#streams tr")[1:]
    log2 = str(p["agents"][1]["logs"] / "app.log")
    row = next(r for r in rows if log2 in r)
    assert row.startswith("web-02 app") and " 0 B" in row, row
    browser.save_screenshot(str(artifacts / "2-streams.png"))

    # Store and jobs: the archive run and the demux output.
    browser.get(base + "/store")
    archive = text_of(browser, By.ID, "archive")
    assert "batches 1" in archive, archive
    assert "AppLog" in text_of(browser, By.ID, "demux")
    browser.save_screenshot(str(artifacts / "3-store.png"))

    # Records: search the text, see the record with its provenance.
    browser.get(base + "/records")
    browser.find_element(By.NAME, "text").send_keys("needle-4242")
    browser.find_element(By.CSS_SELECTOR, "#search button").click()
    wait_for(lambda: browser.find_elements(By.ID, "records"), 30, message="search results")
    assert text_of(browser, By.ID, "total").startswith("1 matching record")
    hit = texts_of(browser, By.CSS_SELECTOR, "#records tr")[1]
    assert "web-02" in hit and log2 in hit and "needle-4242" in hit, hit
    assert str(sizes["web-02"] - len("payment failed for order needle-4242 status=500\n")) in hit, "offset shown"
    browser.save_screenshot(str(artifacts / "4-records.png"))

    # The collector dies: the console says so within seconds.
    collector.signal(signal.SIGKILL)
    killed = time.monotonic()
    browser.get(base + "/")
    wait_for(lambda: (browser.refresh() or "DOWN" in text_of(browser, By.ID, "collectors")), 10,
             interval=0.3, message="the collector shown down")
    shown_after = time.monotonic() - killed
    problems = text_of(browser, By.ID, "problems")
    assert "collector collector-1" in problems and "is DOWN" in problems, problems
    browser.save_screenshot(str(artifacts / "5-collector-down.png"))
    assert shown_after < 5, f"shown down after {shown_after:.1f}s"
    assert hicc.terminate() == 0
