"""The allocation policy: a freed partial chunk goes back to the system (logflume/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

# A 30 MiB partial chunk freed (glibc's rule then raises its mmap threshold to 30 MiB), a 20 MiB one, a small
# block allocated after it, and the chunk freed: prints how many KiB of resident memory the free returned.
CHILD = textwrap.dedent("""
    import sys
    from logflume.allocator import configure_allocator
    from logflume.cli import main

    if sys.argv[1] == "cli":
        main(["version"])
    elif sys.argv[1] == "direct":
        print(configure_allocator())

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    big = bytearray(30 << 20)
    del big
    part = bytearray(20 << 20)
    keep = bytearray(1 << 16)
    before = rss_kib()
    del part
    print(before - rss_kib())
""")


def _run(mode: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LOGFLUME_MALLOPT", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60,
                         env={**environ, **env}, check=True).stdout
    return out.split()


def test_a_freed_partial_chunk_is_returned_once_logflume_started():
    returned = int(_run("cli")[-1])
    assert returned >= 16 << 10, f"only {returned} KiB of a freed 20 MiB buffer left the process"


def test_without_the_policy_glibc_keeps_the_freed_chunk_in_its_heap():
    """The premise of the policy, on this machine's glibc: the control the test above is measured against."""
    returned = int(_run("none")[-1])
    assert returned < 4 << 10, f"glibc returned {returned} KiB on its own: the policy may no longer be needed"


def test_the_operators_environment_and_the_opt_in_are_respected():
    assert _run("direct")[0] == "bounded"
    assert _run("direct", MALLOC_MMAP_THRESHOLD_=str(64 << 20))[0] == "None"
    assert _run("direct", LOGFLUME_MALLOPT="off")[0] == "None"
    assert int(_run("cli", LOGFLUME_MALLOPT="off")[-1]) < 4 << 10  # glibc's own rule, as asked
    assert _run("direct", LOGFLUME_MALLOPT="1")[0] == "reuse"
    assert int(_run("direct", LOGFLUME_MALLOPT="1")[-1]) < 4 << 10  # recycled by the heap, as asked


READS = textwrap.dedent("""
    import os, resource, sys
    from logflume.allocator import configure_allocator

    print(configure_allocator())
    path = sys.argv[1]
    with open(path, "wb") as f:
        f.write(b"x" * (1 << 20))
    fd = os.open(path, os.O_RDONLY)
    data = os.pread(fd, 1 << 20, 0)
    del data
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        data = os.pread(fd, 1 << 20, 0)  # what a tail does: read a block, feed it, drop it
        del data
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def test_read_blocks_reuse_the_heap_instead_of_faulting_in_fresh_pages(tmp_path):
    """A 1 MiB read block freed at the top of the heap stays there for the next read (the trim threshold):
    trimmed at glibc's 128 KiB, each read faulted its 256 pages in again."""
    environ = {k: v for k, v in os.environ.items() if k not in ("LOGFLUME_MALLOPT", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", READS, str(tmp_path / "block")], capture_output=True, text=True,
                         timeout=60, env=environ, check=True).stdout.split()
    assert out[0] == "bounded"
    assert int(out[1]) < 100 * 256 // 10, f"{out[1]} page faults in 100 reads of 1 MiB"

