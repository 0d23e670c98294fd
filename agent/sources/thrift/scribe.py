"""ScribeSource (``type: scribe``): a Scribe-compatible endpoint in the agent (category = stream, message = record).

Applications and ``scribe_cat`` log to the local agent exactly as to scribed;
a call is answered OK once its messages are committed to the channel, and
TRY_LATER while the agent is shutting down.  The endpoint is the collector's
(``logflume.wire.scribe``).
"""

from __future__ import annotations

from typing import ClassVar

from agent.sources.thrift import EndpointSource
from logflume.settings import HostPort, Setting
from logflume.wire.scribe import ScribeEndpoint


class ScribeSource(EndpointSource):
    """Scribe-compatible endpoint in the agent: category -> stream, each message -> one record."""

    settings: ClassVar[dict[str, Setting]] = {
        "listen": Setting(HostPort(), "127.0.0.1:1463", "HOST:PORT to serve Scribe on (scribed listens on 1463)"),
    }

    def make_endpoint(self) -> ScribeEndpoint:
        cfg = self.config
        return ScribeEndpoint(
            self._deliver, source=self.context.agent_name, datatype=cfg.datatype, tags=cfg.tags,
            max_frame_size=cfg.max_frame_size, idle_timeout=cfg.idle_timeout, frame_timeout=cfg.frame_timeout,
            log=self.log,
        )
