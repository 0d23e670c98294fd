"""Issue 14 M5: a symbolic link in a tailed directory must not make a root agent ship what it points to.

The agent runs as root here, as the Kubernetes DaemonSet does: it can read a 0600 file, so only the
source's own refusal keeps the secret out.  Files are opened with O_NOFOLLOW (a link swapped in after
the check fails to open) and O_NONBLOCK (a FIFO swapped in cannot hang the source).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from agent.sources.spooldir import SpoolDirSource
from logflume.component import Context
from logflume.settings import parse_settings
from logflume.testing.recording_sink import read_chunks
from tests.conftest import wait_for
from tests.tail.harness import CollectingOutput
from tests.tail.test_rotation_e2e import agent_config

SECRET = b"root:$6$SECRET-HASH-NEVER-SHIPPED:19000:0:99999:7:::\n"


def private_file(tmp_path: Path) -> Path:
    priv = tmp_path / "priv"
    priv.mkdir(mode=0o700)
    shadow = priv / "shadow"
    shadow.write_bytes(SECRET * 50)
    shadow.chmod(0o600)
    return shadow


def shipped(out: Path) -> bytes:
    return b"".join(bytes(c.data) for c in read_chunks(out))


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow_symlinks-true"])
def test_link_to_a_private_file_is_not_shipped(tmp_path, logflume_proc, follow):
    shadow = private_file(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "evil.log").symlink_to("../priv/shadow")  # relative, as an attacker with write access makes it
    (logs / "abs.log").symlink_to(shadow)
    (logs / "app.log").write_bytes(b"app line\n")
    (logs / "current.log").symlink_to("app-2.log")  # a link inside the globs
    (logs / "app-2.log").write_bytes(b"app-2 line\n")
    out = tmp_path / "out.bin"
    extra = {"follow_symlinks": True} if follow else {}
    cfg = agent_config(tmp_path, [str(logs / "*.log")], out, **extra)
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    # The first scan looks at every path at once; a later file proves that scan and its reads are over.
    wait_for(lambda: b"app line\n" in shipped(out) and b"app-2 line\n" in shipped(out), message="the real logs")
    (logs / "later.log").write_bytes(b"later line\n")
    wait_for(lambda: b"later line\n" in shipped(out), message="a file created after the first scan")
    assert agent.terminate() == 0, agent.log()
    data = shipped(out)
    assert b"SECRET" not in data
    assert data.count(b"app-2 line\n") == 1  # followed or not, a file in the globs is read once
    streams = {c.stream for c in read_chunks(out)}
    assert not streams & {str(logs / "evil.log"), str(logs / "abs.log")}
    if follow:
        assert "which no glob of this source matches" in agent.log()


def test_linked_directory_under_the_wildcards_is_not_entered(tmp_path, logflume_proc):
    """``logs/*/*.log`` with ``logs/app -> ../priv``: the glob's wildcards must not lead through the link."""
    shadow = private_file(tmp_path)
    (shadow.parent / "shadow.log").write_bytes(SECRET)
    logs = tmp_path / "logs"
    (logs / "web").mkdir(parents=True)
    (logs / "web" / "access.log").write_bytes(b"web line\n")
    (logs / "app").symlink_to("../priv", target_is_directory=True)
    out = tmp_path / "out.bin"
    agent = logflume_proc(["agent", "-c", agent_config(tmp_path, [str(logs / "*" / "*.log")], out)], name="agent")
    wait_for(lambda: b"web line\n" in shipped(out), message="the real log")
    (logs / "web" / "later.log").write_bytes(b"later line\n")
    wait_for(lambda: b"later line\n" in shipped(out), message="a file created after the first scan")
    assert agent.terminate() == 0, agent.log()
    assert b"SECRET" not in shipped(out)


def test_link_swapped_in_while_the_agent_scans_is_not_shipped(tmp_path, logflume_proc):
    """A path flips between a regular file and a link to the secret while the agent scans every 50 ms: a
    check-then-open race must never open the link (O_NOFOLLOW)."""
    shadow = private_file(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    out = tmp_path / "out.bin"
    cfg = agent_config(tmp_path, [str(logs / "*.log")], out, scan_interval="50ms")
    agent = logflume_proc(["agent", "-c", cfg], name="agent")
    stop = threading.Event()
    flips = [0]

    def flip() -> None:
        target = logs / "race.log"
        n = 0
        while not stop.is_set():
            n += 1
            regular, link = logs / f".r{n}", logs / f".l{n}"
            regular.write_bytes(b"regular %d\n" % n)
            link.symlink_to(shadow)
            os.rename(regular, target)  # a file with bytes: the agent wants to open it ...
            time.sleep(0.0005)
            os.rename(link, target)  # ... and finds a link there
            time.sleep(0.0005)
            flips[0] = n

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    try:
        wait_for(lambda: b"regular" in shipped(out), timeout=30, message="some regular generations read")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and b"SECRET" not in shipped(out):
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(5)
    assert agent.terminate() == 0, agent.log()
    assert flips[0] > 100
    assert b"SECRET" not in shipped(out), f"the secret was shipped ({flips[0]} flips)"


def _spooldir(tmp_path: Path, spool: Path) -> SpoolDirSource:
    values = parse_settings(SpoolDirSource.schema(), {"channels": ["ch"], "dir": str(spool)}, "sources.s", None)
    return SpoolDirSource("s", values, Context(agent_name="testhost", data_dir=tmp_path / "data"))


def test_spooldir_open_refuses_a_link_and_a_fifo_in_bounded_time(tmp_path):
    """Spooldir lists only regular files, but what it opens may have been swapped since: a link must not be
    read through, and a FIFO must not block the source (it waits for a writer that never comes)."""
    shadow = private_file(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "evil.log").symlink_to(shadow)
    os.mkfifo(spool / "fifo.log")
    src = _spooldir(tmp_path, spool)
    out = CollectingOutput()
    src.output = out  # ingest() runs in the test's thread: what the source's loop would do after a listing
    src._state_path = src.context.state_dir("source", "s") / "checkpoint.json"
    src._state = {}
    done = threading.Event()

    def ingest_both() -> None:
        src.ingest(spool / "evil.log")
        src.ingest(spool / "fifo.log")
        done.set()

    threading.Thread(target=ingest_both, daemon=True).start()
    assert done.wait(5), "ingest blocked on a FIFO"
    assert not any(b"SECRET" in bytes(c.data) for c in out.snapshot())
