"""SFTP stores prove the server by its host key (real OpenSSH sshd on loopback): unknown or changed keys refused."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from pathlib import Path

import pytest

from logflume.component import Context
from logflume.errors import ConfigError, StartupError
from sinks.file import FileSink
from sinks.seqfile import SeqFileSink
from sinks.storage import open_filesystem
from tests.store import conftest as store
from tests.store.conftest import SSH_KEYGEN, SSHD, ChunkMaker, Sshd, final_files, make_sink, read_chunks

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH sshd is not installed (openssh-server)")]

sshd = store.sshd  # a real sshd on loopback, the store tests' fixture

#: A refused connection must fail fast, not hang until some network timeout.
REFUSAL_SECONDS = 10.0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty home directory: ``~/.ssh/known_hosts`` of the test runner is not consulted."""
    path = tmp_path / "home"
    (path / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(path))
    return path


@pytest.fixture
def context(tmp_path: Path) -> Context:
    return Context(agent_name="coll1", data_dir=tmp_path / "state")


def login(sshd: Sshd) -> dict:
    """Credentials only: no trust in the host key."""
    return {"key_filename": str(sshd.user_key), "look_for_keys": False, "allow_agent": False}


def keyscan(sshd: Sshd) -> str:
    """The server's known_hosts line, from OpenSSH's own ssh-keyscan."""
    out = subprocess.run(["ssh-keyscan", "-p", str(sshd.port), "-t", "ed25519", "127.0.0.1"], check=True,
                         capture_output=True, text=True, timeout=30).stdout
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 " in out, out
    return out


def other_key(tmp_path: Path) -> Path:
    key = tmp_path / "impostor_ed25519"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    return key


def seqfile(sshd: Sshd, tmp_path: Path, context: Context, options: dict) -> SeqFileSink:
    return make_sink(SeqFileSink, "primary", {"url": sshd.url(tmp_path / "store"), "storage_options": options,
                                              "timeout": "5s"}, context)


def assert_refused(sink, store: Path, *needles: str) -> str:
    started = time.monotonic()
    with pytest.raises(StartupError) as info:
        sink.start()
    elapsed = time.monotonic() - started
    assert elapsed < REFUSAL_SECONDS, f"refusal took {elapsed:.1f}s"
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    assert not store.exists(), "the store was written to although the server was not trusted"
    sink.stop()
    return message


def assert_writes(sink: SeqFileSink, store: Path) -> None:
    chunks = ChunkMaker().batch(6)
    sink.start()
    try:
        sink.deliver(chunks)
    finally:
        sink.stop()
    got = read_chunks(final_files(store))
    assert [c.seq_id for c in got] == [c.seq_id for c in chunks]


def test_unknown_host_key_is_refused_by_default_saying_how_to_trust_it(sshd, tmp_path, context, home):
    sink = seqfile(sshd, tmp_path, context, login(sshd))
    message = assert_refused(sink, tmp_path / "store", "is not trusted", sshd.host_key_fingerprint,
                             f"ssh-keyscan -p {sshd.port} -t ssh-ed25519 127.0.0.1 >> {home}/.ssh/known_hosts",
                             "host_key_fingerprint")
    assert f"[127.0.0.1]:{sshd.port}" in message


def test_default_known_hosts_trusts_a_scanned_key(sshd, tmp_path, context, home):
    (home / ".ssh" / "known_hosts").write_text(keyscan(sshd))
    assert_writes(seqfile(sshd, tmp_path, context, login(sshd)), tmp_path / "store")


def test_configured_known_hosts_file_trusts_a_hashed_entry(sshd, tmp_path, context, home):
    known = tmp_path / "known_hosts"
    known.write_text(keyscan(sshd))
    subprocess.run([SSH_KEYGEN, "-H", "-f", str(known)], check=True, capture_output=True, timeout=30)
    assert "127.0.0.1" not in known.read_text()  # the host name is hashed, as OpenSSH's HashKnownHosts does
    assert_writes(seqfile(sshd, tmp_path, context, {**login(sshd), "known_hosts": str(known)}), tmp_path / "store")


def test_configured_fingerprint_is_trusted_and_another_is_not(sshd, tmp_path, context, home):
    impostor = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", f"{other_key(tmp_path)}.pub"], check=True,
                              capture_output=True, text=True, timeout=30).stdout.split()[1]
    wrong = seqfile(sshd, tmp_path, context, {**login(sshd), "host_key_fingerprint": [impostor]})
    assert_refused(wrong, tmp_path / "store", "is not trusted", impostor, sshd.host_key_fingerprint)
    right = seqfile(sshd, tmp_path, context, {**login(sshd), "host_key_fingerprint": sshd.host_key_fingerprint})
    assert_writes(right, tmp_path / "store")


def test_a_changed_host_key_is_refused_even_with_its_fingerprint_elsewhere(sshd, tmp_path, context, home):
    """known_hosts names another key for this server (a man in the middle, or a reinstalled server)."""
    impostor = (Path(f"{other_key(tmp_path)}.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {' '.join(impostor)}\n")
    sink = seqfile(sshd, tmp_path, context, login(sshd))
    assert_refused(sink, tmp_path / "store", "does not match")


def test_file_sink_verifies_host_keys_too(sshd, tmp_path, context, home):
    url = sshd.url(tmp_path / "files")
    sink = make_sink(FileSink, "out", {"url": url, "channel": "c", "storage_options": login(sshd)}, context)
    with pytest.raises(Exception, match="is not trusted"):
        sink.start()
    assert not (tmp_path / "files").exists()
    trusted = {**login(sshd), "host_key_fingerprint": sshd.host_key_fingerprint}
    sink = make_sink(FileSink, "out", {"url": url, "channel": "c", "storage_options": trusted}, context)
    sink.start()
    try:
        sink.deliver(ChunkMaker().batch(3))
    finally:
        sink.stop()
    assert [p.name for p in (tmp_path / "files").iterdir() if p.name.endswith(".log")]


@pytest.mark.parametrize(("options", "key", "message"), [
    ({"host_key_policy": "auto_add"}, "host_key_policy", "host keys are always verified"),
    ({"host_key_fingerprint": "MD5:aa:bb"}, "host_key_fingerprint", "expected SHA256:"),
    ({"host_key_fingerprint": ["SHA256:" + "A" * 43, "nope"]}, "host_key_fingerprint[1]", "expected SHA256:"),
    ({"known_hosts": ["/a"]}, "known_hosts", "expected a file path"),
])
def test_host_key_options_are_checked(context, options, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_sink(SeqFileSink, "primary", {"url": "sftp://u@127.0.0.1:1/x", "storage_options": options}, context)
    assert info.value.path == f"primary.storage_options.{key}"


def test_host_key_options_only_for_sftp(context, tmp_path):
    with pytest.raises(ConfigError, match="only for sftp:// stores"):
        make_sink(SeqFileSink, "s", {"url": str(tmp_path), "storage_options": {"known_hosts": "/x"}}, context)


def test_a_pickled_filesystem_verifies_again(sshd, tmp_path, home):
    """Spark and Dask ship filesystems to workers by pickling: the copy keeps the trust settings."""
    fs, root = open_filesystem(sshd.url(tmp_path), {**login(sshd), "host_key_fingerprint": sshd.host_key_fingerprint})
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.fingerprints == [sshd.host_key_fingerprint] and copy.exists(root)
    impostor = " ".join(Path(f"{other_key(tmp_path)}.pub").read_text().split()[:2])
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {impostor}\n")
    type(fs).clear_instance_cache()  # as in a fresh worker process
    with pytest.raises(Exception, match="does not match"):
        pickle.loads(pickle.dumps(fs))  # reconnects: known_hosts now names another key for this server
