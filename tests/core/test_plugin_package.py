"""The docs/plugins.md walkthrough: the example package, installed with pip, passes its contract tests and runs.

examples/plugin-example is installed into a separate directory (``pip install
--no-deps --target``), never imported from the repository: its own tests run
against the installed copy, and a real agent finds its three plugins through
their entry points.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from logflume.testing.channel_contract import ChannelContract
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "examples" / "plugin-example"

CONTRACT_TESTS = [n for n in dir(ChannelContract) if n.startswith("test_")]


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    # copy so the build leaves no egg-info in the repo
    subprocess.run(["cp", "-r", str(PKG), str(build / "pkg")], check=True)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(build / "pkg")],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert list(target.glob("logflume_plugin_example-1.0.0.dist-info"))
    return target


def test_installed_channel_passes_the_exported_contract_suite(plugin_site, tmp_path):
    tests = tmp_path / "tests"
    shutil.copytree(PKG / "tests", tests)  # the tests alone: the package comes from the installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          str(tests)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert f"{len(CONTRACT_TESTS) + 1} passed" in res.stdout, res.stdout[-500:]
    assert str(plugin_site) in subprocess.run(
        [sys.executable, "-c", "import logflume_example; print(logflume_example.__file__)"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60).stdout


def test_entry_point_plugins_run_in_a_real_agent(plugin_site, tmp_path, logflume_proc):
    out = tmp_path / "out.txt"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{name: plug, data_dir: {tmp_path / 'data'}}}
sources:
  greet: {{type: greetings, channels: [q], greeting: bonjour, count: 4}}
channels:
  q: {{type: sqlite}}
sinks:
  up: {{type: upperfile, channel: q, path: {out}}}
""")
    env = {"PYTHONPATH": str(plugin_site) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    check = subprocess.run([sys.executable, "-m", "logflume", "check", "-c", str(cfg)], capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "greetings:greet -> channel sqlite:q -> upperfile:up" in check.stdout
    agent = logflume_proc(["agent", "-c", cfg], env=env)
    wait_for(lambda: out.exists() and out.read_text().count("\n") == 4, 60, message="plugin output")
    assert out.read_text() == "".join(f"BONJOUR {i}\n" for i in range(4))
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    # The source numbered its stream through its ledger and the channel kept its chunks in SQLite.
    ledger = json.loads((tmp_path / "data" / "source" / "greet" / "streams.json").read_text())
    assert set(ledger["streams"]) == {"greetings"}
    assert (tmp_path / "data" / "channel" / "q" / "channel.db").exists()


def test_plugin_without_entry_point_is_a_clear_error(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("sources:\n  g: {type: greetings, channels: [m]}\nchannels:\n  m: {type: memory}\n"
                   "sinks:\n  s: {type: 'null', channel: m}\n")
    res = subprocess.run([sys.executable, "-m", "logflume", "check", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert "sources.g.type: unknown source type 'greetings'" in res.stderr
