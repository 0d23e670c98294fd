"""FlumeSource (``type: flume``): a Flume-ThriftSource-compatible endpoint in the agent (headers = tags, body = record).

Flume's Thrift RPC clients (and anything generated from Flume's IDL) send to
the local agent unchanged; a call is answered OK once its events are
committed to the channel, FAILED otherwise.  The endpoint is the collector's
(``logflume.wire.flume``).
"""

from __future__ import annotations

from typing import ClassVar

from agent.sources.thrift import EndpointSource
from logflume.settings import HostPort, Setting, Str
from logflume.wire.flume import FlumeEndpoint


class FlumeSource(EndpointSource):
    """Flume-ThriftSource-compatible endpoint in the agent: headers -> tags, each event body -> one record."""

    settings: ClassVar[dict[str, Setting]] = {
        "listen": Setting(HostPort(), "127.0.0.1:4141", "HOST:PORT to serve Flume's Thrift protocol on"),
        "stream": Setting(Str(), "flume", "Stream name of the chunks"),
    }

    def make_endpoint(self) -> FlumeEndpoint:
        cfg = self.config
        return FlumeEndpoint(
            self._deliver, source=self.context.agent_name, stream=cfg.stream, datatype=cfg.datatype, tags=cfg.tags,
            max_frame_size=cfg.max_frame_size, idle_timeout=cfg.idle_timeout,
            frame_timeout=cfg.frame_timeout, log=self.log,
        )
