"""The error a job stops on: one line naming the input and what is wrong with it."""

from __future__ import annotations

from logflume.errors import LogflumeError


class JobError(LogflumeError):
    """A job cannot continue (unreadable input, a record that is not a chunk, a bad manifest)."""
