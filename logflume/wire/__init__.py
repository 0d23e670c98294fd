"""The wire: logflume's agent -> collector protocol and the Scribe / Flume Thrift endpoints.

Shared by agents (the ``collector`` sink, the ``scribe`` and ``flume``
sources) and the collector daemon, so neither imports the other.
"""

from logflume.wire.client import AckResult, RefusedError, WireClient
from logflume.wire.endpoint import WireEndpoint
from logflume.wire.idl import PROTOCOL_VERSION, Status
from logflume.wire.server import TcpServer

__all__ = ["PROTOCOL_VERSION", "AckResult", "RefusedError", "Status", "TcpServer", "WireClient", "WireEndpoint"]
