"""The file sink: rolling files on local disk, on an object store (staged, uploaded on roll) and over SFTP."""

from __future__ import annotations

import os
import time

import fsspec
import pytest

from logflume.errors import DeliveryError
from sinks.file import FileSink
from sinks.storage import RemoteFiles, StoreFiles
from tests.conftest import wait_for
from tests.sinks.test_console_and_null_sinks import chunks, make
from tests.store.conftest import sshd  # noqa: F401 - a real OpenSSH server on loopback


def test_file_sink_rolls_by_size_and_renames_closed_files(tmp_path):
    sink = make(FileSink, {"url": str(tmp_path / "out"), "roll_size": 1000}, tmp_path)
    sink.start()
    cs = chunks(50)
    for i in range(0, 50, 5):
        sink.deliver(cs[i:i + 5])
    in_progress = [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".inprogress")]
    assert len(in_progress) == 1 and in_progress[0].name.startswith(".")
    sink.stop()
    files = sorted((tmp_path / "out").iterdir())
    assert files and not any(p.name.startswith(".") for p in files)
    assert len(files) == 5, [p.name for p in files]  # 500 bytes per delivery, rolled after >= 1000 bytes
    assert b"".join(p.read_bytes() for p in files) == b"".join(c.data for c in cs)


def test_file_sink_rolls_by_time(tmp_path):
    sink = make(FileSink, {"url": f"file://{tmp_path}/out", "roll_interval": "100ms"}, tmp_path)
    sink.start()
    cs = chunks(3)
    sink.deliver(cs[:1])
    time.sleep(0.15)
    sink.deliver(cs[1:])
    sink.stop()
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_file_sink_recovers_in_progress_file_after_crash(tmp_path):
    sink = make(FileSink, {"url": str(tmp_path / "out")}, tmp_path)
    sink.start()
    sink.deliver(chunks(3))
    # simulate a crash: no stop(); a new sink starts on the same directory
    sink2 = make(FileSink, {"url": str(tmp_path / "out")}, tmp_path)
    sink2.start()
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert len(names) == 1 and not names[0].startswith("."), names
    assert (tmp_path / "out" / names[0]).read_bytes() == b"".join(c.data for c in chunks(3))
    sink2.stop()


def memory_url(tmp_path) -> str:
    return f"memory://bucket{os.getpid()}/{tmp_path.name}/out"


def stored(url: str) -> dict[str, bytes]:
    fs = fsspec.filesystem("memory")
    root = url[len("memory://"):]
    return {p.rsplit("/", 1)[-1]: fs.cat_file(p) for p in fs.find("/" + root)}


def test_on_an_object_store_an_acknowledged_batch_survives_a_crash_and_is_uploaded(tmp_path):
    # an object store takes whole objects only: a batch written to an open S3 file is in this process's memory
    url = memory_url(tmp_path)
    cfg = {"url": url, "staging_dir": str(tmp_path / "staging")}
    sink = make(FileSink, cfg, tmp_path)
    sink.start()
    sink.deliver(chunks(3))  # acknowledged: then the process dies (no stop)
    assert stored(url) == {}, "nothing is visible in the store before the file rolls"
    sink2 = make(FileSink, cfg, tmp_path)
    sink2.start()
    files = stored(url)
    assert list(files.values()) == [b"".join(c.data for c in chunks(3))]
    assert not any(n.startswith(".") for n in files)
    assert os.listdir(tmp_path / "staging") == [], "uploaded, then removed from the staging directory"
    sink2.stop()


def test_a_failed_upload_keeps_the_file_staged_and_fails_batches_until_it_is_uploaded(tmp_path, monkeypatch):
    url = memory_url(tmp_path)
    sink = make(FileSink, {"url": url, "staging_dir": str(tmp_path / "staging"), "roll_size": 500}, tmp_path)
    sink.start()
    real_upload = RemoteFiles.upload
    failing = {"left": 1}

    def upload(self, local_path, rel):
        if failing["left"]:
            failing["left"] -= 1
            raise OSError("store unavailable")
        return real_upload(self, local_path, rel)

    monkeypatch.setattr(RemoteFiles, "upload", upload)
    monkeypatch.setattr("sinks.file.UPLOAD_RETRY", 2.0)
    cs = chunks(10)
    sink.deliver(cs[:5])
    with pytest.raises(OSError, match="store unavailable"):
        sink.deliver(cs[5:])  # rolls the first file, whose upload fails: this batch is not taken
    assert stored(url) == {}
    assert len([n for n in os.listdir(tmp_path / "staging") if not n.startswith(".")]) == 1
    connects = []
    real_connect = StoreFiles.connect
    monkeypatch.setattr(StoreFiles, "connect", lambda self: (connects.append(1), real_connect(self))[1])
    with pytest.raises(DeliveryError, match="waits for its upload"):
        sink.deliver(cs[5:])  # within UPLOAD_RETRY: refused at once, no round trip to the store
    assert connects == [], "a refused batch neither connects to the store nor drops a connection"
    time.sleep(2.1)
    sink.deliver(cs[5:])  # the upload goes through first, then the batch is written
    assert len(stored(url)) == 1
    sink.stop()
    assert b"".join(v for _, v in sorted(stored(url).items())) == b"".join(c.data for c in cs)
    assert os.listdir(tmp_path / "staging") == []


def test_over_sftp_files_are_written_in_place_and_fsynced_by_the_server(tmp_path, sshd):  # noqa: F811
    out = tmp_path / "remote"
    sink = make(FileSink, {"url": sshd.url(out), "storage_options": sshd.storage_options(),
                           "roll_size": 1000}, tmp_path)
    sink.start()
    cs = chunks(20)
    for i in range(0, 20, 5):
        sink.deliver(cs[i:i + 5])
        assert sum(p.name.startswith(".") for p in out.iterdir()) == 1, "one file in progress, hidden"
    assert sink.files.target.server_fsync is True  # OpenSSH offers fsync@openssh.com: every batch was fsynced
    sink.stop()
    files = sorted(out.iterdir(), key=lambda p: int(p.name.rsplit("-", 1)[1].split(".")[0]))
    assert files and not any(p.name.startswith(".") for p in files)
    assert b"".join(p.read_bytes() for p in files) == b"".join(c.data for c in cs)


def test_an_idle_file_rolls_on_time_so_readers_see_what_was_acknowledged(tmp_path):
    sink = make(FileSink, {"url": str(tmp_path / "out"), "roll_interval": "200ms"}, tmp_path)
    sink.start()
    try:
        sink.deliver(chunks(3))  # and then nothing more comes
        visible = wait_for(lambda: [p for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")], 10,
                           message="the idle file rolled")
        assert visible[0].read_bytes() == b"".join(c.data for c in chunks(3))
        assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    finally:
        sink.stop()
