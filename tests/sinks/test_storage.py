"""sinks/storage.py: what a remote store remembers stays bounded however many directories senders cause."""

from __future__ import annotations

import os

import fsspec

from sinks.storage import MAX_MADE, RemoteFiles


def test_directories_made_on_a_remote_store_are_remembered_up_to_a_bound(tmp_path) -> None:
    fs = fsspec.filesystem("memory", skip_instance_cache=True)
    root = f"/made{os.getpid()}/{tmp_path.name}"
    files = RemoteFiles(fs, root, timeout=5)
    try:
        for i in range(3 * MAX_MADE):  # one directory per datatype and day: {datatype}/{date}
            files.makedirs(f"dt{i}/2026-12-06")
            assert len(files._made) <= MAX_MADE
        files.makedirs("dt0/2026-12-06")  # forgotten, made again: a round trip, no error
        assert fs.isdir(f"{root}/dt0/2026-12-06") and fs.isdir(f"{root}/dt{3 * MAX_MADE - 1}/2026-12-06")
    finally:
        fs.rm(root, recursive=True)
