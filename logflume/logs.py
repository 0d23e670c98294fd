"""Every daemon's logging: one line per record on stderr, with secrets redacted (see :mod:`logflume.secrets`)."""

from __future__ import annotations

import logging
import sys

from logflume.secrets import RedactingFilter


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger; every handler gets a :class:`RedactingFilter`."""
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
