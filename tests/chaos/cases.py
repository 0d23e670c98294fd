"""The chaos cases: how each set of files is written and rotated, and which agents tail it with which glob.

Each case has its own directory (``logs/<case>``) and writers whose file ids
start with ``<case>-``, so every line in the store names the case it belongs
to.  Agent ``afile`` (file channel) tails the directories of every
file-channel case, one tail source per case; ``amem`` (memory channel) tails
``memory``; ``atwin`` is a second file-channel agent configured with the
*same name* as ``afile`` (``agent.name: afile``), tailing the ``twin``
directory beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The agent processes, in start order.  ``afile`` and ``amem`` are the fault schedule's targets.
AGENTS = ("afile", "amem", "atwin")
#: The name each agent process is configured with (the chunks' ``source``).
AGENT_NAMES = {"afile": "afile", "amem": "amem", "atwin": "afile"}
FILE_CHANNEL_AGENTS = ("afile", "atwin")


@dataclass(frozen=True)
class Case:
    name: str
    agents: tuple[str, ...]  # agent processes that tail this case's directory
    glob: str  # the tail source's glob inside the directory
    rotate: str  # writers' --rotate: mixed, rename or copytruncate
    copies: str  # writers' --copies: apart (not matched by the glob) or followed
    writers: int
    files: int  # per writer
    rotate_every: float  # seconds between rotations of a file (mean)
    wait_for: str | None  # agent whose positions a copytruncate waits for; None: no wait and no window
    first_write: int = 0  # bytes of a new file's first write (writers' --first-write)

    @property
    def file_channel(self) -> bool:
        return all(a in FILE_CHANNEL_AGENTS for a in self.agents)


CASES = (
    # The original case: random rename and copytruncate, rotated names followed, copies not.
    Case("mixed", ("afile",), "*.log*", "mixed", "apart", writers=2, files=3, rotate_every=15, wait_for="afile"),
    # Issue 13, cause 1: rename rotation with a glob that does not match the rotated names;
    # SIGKILLs of afile (the fault schedule) land between renames.
    # Before a rename the writer waits (up to 8 s) until afile's position file names the file: one born
    # and moved away while afile is down is at no watched path when it looks (a window, not a loss).
    Case("rename", ("afile",), "*.log", "rename", "apart", writers=1, files=3, rotate_every=3, wait_for="afile"),
    # Issue 13, cause 2: copytruncate with the copies followed (x.log.N matches *.log*).  The writer does
    # not wait for the agent: following the copies is what closes the window, so no line may be missing.
    Case("copies", ("afile",), "*.log*", "copytruncate", "followed", writers=1, files=3, rotate_every=5,
         wait_for=None),
    # Two agents configured with the same name tail the same files.  atwin is hung (SIGSTOP) for longer
    # than two rotations now and then, so it counts fewer truncations than afile: the same
    # (source, stream, epoch) then names different bytes in the two agents' chunks, a conflict archive
    # must report.  The first write of a file is 1 KiB, so both agents fingerprint the same first bytes.
    Case("twin", ("afile", "atwin"), "*.log*", "copytruncate", "apart", writers=1, files=2, rotate_every=2,
         wait_for="afile", first_write=1024),
    # The memory channel's weaker promise.
    Case("memory", ("amem",), "*.log*", "mixed", "apart", writers=2, files=3, rotate_every=15, wait_for="amem"),
)

BY_NAME = {c.name: c for c in CASES}


def case_of(file_id: str) -> str:
    """The case a line belongs to, from its file id (``<case>-w<i>-f<j>``)."""
    return file_id.split("-", 1)[0]
