"""HICC test helpers: a real pipeline on loopback (collector, agents, HICC as processes) and a headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, wait_for

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1366,900")


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture
def artifacts(tmp_path) -> Path:
    """Where screenshots go: $HICC_ARTIFACTS if set (kept after the run), else the test's tmp dir."""
    root = os.environ.get("HICC_ARTIFACTS")
    path = Path(root) if root else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by its chromedriver through Selenium; nothing is downloaded."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        why = "needs Debian's chromium and chromium-driver (scripts/test installs them)"
        if os.environ.get("CI"):
            pytest.fail(why)  # CI runs scripts/test as root: a missing browser is a broken install step
        pytest.skip(why)
    profile = tempfile.mkdtemp(prefix="hicc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def pipeline_configs(tmp_path: Path, agents: int = 2) -> dict:
    """YAML for one collector, ``agents`` agents tailing their own logs dir, and HICC watching them all."""
    cport, cmport, hport = free_port(), free_port(), free_port()
    out = {"collector_port": cport, "collector_metrics": cmport, "hicc_port": hport, "agents": []}
    store = tmp_path / "store"
    out["collector"] = write_yaml(tmp_path / "collector.yaml", {
        "collector": {"name": "collector-1", "listen": f"127.0.0.1:{cport}", "metrics": f"127.0.0.1:{cmport}",
                      "data_dir": str(tmp_path / "cdata")},
        "store": {"type": "buffer", "primary": {"type": "seqfile", "url": str(store), "roll_interval": "1s"},
                  "secondary": {"dir": str(tmp_path / "cdata" / "secondary")}},
    })
    for i in range(1, agents + 1):
        mport = free_port()
        logs = tmp_path / f"logs-{i}"
        logs.mkdir()
        cfg = write_yaml(tmp_path / f"agent-{i}.yaml", {
            "agent": {"name": f"web-0{i}", "data_dir": str(tmp_path / f"adata-{i}"), "metrics": f"127.0.0.1:{mport}",
                      "shutdown_timeout": "2s"},
            "sources": {"app": {"type": "tail", "paths": [str(logs / "*.log")], "datatype": "AppLog",
                                "flush_interval": "100ms", "channels": ["mem"]}},
            "channels": {"mem": {"type": "memory"}},
            "sinks": {"up": {"type": "collector", "channel": "mem", "collectors": [f"127.0.0.1:{cport}"],
                             "cooldown": "1s", "retry_initial": "50ms", "retry_max": "500ms"}},
        })
        out["agents"].append({"config": cfg, "metrics": mport, "logs": logs, "name": f"web-0{i}"})
    out["store"], out["archive"], out["demux"] = store, tmp_path / "archive", tmp_path / "demux"
    out["hicc"] = write_yaml(tmp_path / "hicc.yaml", {"hicc": {
        "listen": f"127.0.0.1:{hport}", "data_dir": str(tmp_path / "hicc"),
        "agents": [f"127.0.0.1:{a['metrics']}" for a in out["agents"]],
        "collectors": [f"127.0.0.1:{cmport}"], "poll_interval": "500ms", "poll_timeout": "1s", "refresh": "1s",
        "store": str(store), "archive": str(out["archive"]), "demux": str(out["demux"]),
    }})
    return out


__all__ = ["answers", "get_json", "pipeline_configs", "wait_for", "write_yaml"]


def _unstale(read, timeout: float):
    """``read()``, again while the page replaced what it found meanwhile (StaleElementReferenceException).

    The console re-renders on its refresh; between finding an element and reading its text the old
    element may be gone, more often on a busy machine.
    """
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            return read()
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def text_of(browser, by: str, what: str, timeout: float = 10.0) -> str:
    """The text of the element found by ``(by, what)``, found again if the page replaced it meanwhile."""
    return _unstale(lambda: browser.find_element(by, what).text, timeout)


def texts_of(browser, by: str, what: str, timeout: float = 10.0) -> list[str]:
    """The texts of every element found by ``(by, what)``, all from one rendering of the page."""
    return _unstale(lambda: [e.text for e in browser.find_elements(by, what)], timeout)
