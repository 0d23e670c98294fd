"""Error types with context, raised where a problem is detected and reported once, at the edge."""

from __future__ import annotations


class LogflumeError(Exception):
    """Base of every error logflume raises on purpose."""


class ConfigError(LogflumeError):
    """A configuration problem: names the file, the key path and what was expected."""

    def __init__(self, file: str | None, path: str, message: str) -> None:
        self.file = file
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<config>"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class StartupError(LogflumeError):
    """A daemon cannot start (port in use, unreadable directory, ...): one line, exit non-zero."""


class DeliveryError(LogflumeError):
    """The next hop did not accept a batch; the caller rolls back and retries."""


class TryLater(DeliveryError):
    """The next hop is alive but asks to be called again after ``delay`` seconds."""

    def __init__(self, message: str = "try later", delay: float = 1.0) -> None:
        self.delay = delay
        super().__init__(message)


class ChannelClosed(LogflumeError):
    """The channel was closed while a caller waited on it."""


class ChannelFull(LogflumeError):
    """A put waited past its timeout for room in a full channel."""
