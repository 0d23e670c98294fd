"""A third-party plugin package, installed with pip, is found through its entry points and runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for

PKG = Path(__file__).resolve().parents[1] / "data" / "plugin_pkg"


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
    assert list(target.glob("logflume_hello-1.0.0.dist-info"))
    return target


def test_entry_point_plugins_run_in_a_real_agent(plugin_site, tmp_path, logflume_proc):
    out = tmp_path / "out.txt"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{name: plug, data_dir: {tmp_path / 'data'}}}
sources:
  greet: {{type: hello, channels: [m], greeting: bonjour, count: 4}}
channels:
  m: {{type: memory}}
sinks:
  up: {{type: upperfile, channel: m, path: {out}}}
""")
    env = {"PYTHONPATH": str(plugin_site) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    check = subprocess.run([sys.executable, "-m", "logflume", "check", "-c", str(cfg)], capture_output=True,
                           text=True, env={**os.environ, **env}, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "hello:greet -> channel memory:m -> upperfile:up" in check.stdout
    agent = logflume_proc(["agent", "-c", cfg], env=env)
    wait_for(lambda: out.exists() and out.read_text().count("\n") == 4, 20, message="plugin output")
    assert out.read_text() == "".join(f"BONJOUR {i}\n" for i in range(4))
    agent.signal(signal.SIGTERM)
    assert agent.wait(20) == 0


def test_plugin_without_entry_point_is_a_clear_error(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("sources:\n  g: {type: hello, channels: [m]}\nchannels:\n  m: {type: memory}\n"
                   "sinks:\n  s: {type: 'null', channel: m}\n")
    res = subprocess.run([sys.executable, "-m", "logflume", "check", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert "sources.g.type: unknown source type 'hello'" in res.stderr
