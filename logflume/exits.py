"""How a logflume command ends when it cannot do its job: its exit code and one line on stderr.

Every command and daemon (``logflume agent``, ``collector``, ``hicc``, the
tools) says so the same way, so that init systems and scripts can tell a
configuration to fix (exit 2) from a start that failed (exit 1, say a port in
use), and a person reads one line, with secrets redacted, instead of a traceback.
"""

from __future__ import annotations

import sys

from logflume.secrets import redact_text

#: Anything else that stopped the command: a port in use, a peer away, a refused request.
EXIT_STARTUP = 1
#: The configuration (file or arguments) is wrong: fix it and run again.
EXIT_CONFIG = 2


def fail(cmd: str, message: object, code: int) -> int:
    """Print ``logflume CMD: MESSAGE`` to stderr (secrets redacted) and return ``code`` for the caller to exit with."""
    print(f"logflume {cmd}: {redact_text(str(message))}", file=sys.stderr, flush=True)
    return code


def cannot_start(cmd: str, reason: object, code: int) -> int:
    """A daemon that cannot start: ``logflume CMD: cannot start: REASON``; returns ``code``."""
    return fail(cmd, f"cannot start: {reason}", code)
