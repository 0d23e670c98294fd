"""The Thrift endpoint sources (``scribe``, ``flume``): EndpointSource hosts a wire endpoint on a local port.

Scribe's two-tier design: applications log to a local agent, which commits
what they send to its channel (on its own disk with the file channel) before
answering OK, and forwards later.  The endpoint code is the collector's; only
``deliver`` differs: here it is ``self.output.deliver`` (blocks while the
channel is full, so callers slow down; ChannelClosed at shutdown is answered
as TRY_LATER / FAILED so clients retry elsewhere or later).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from logflume.chunk import Chunk
from logflume.settings import Duration, Setting, Size
from logflume.source import Source, SourceOutput
from logflume.wire.server import LISTENER_SETTINGS, TcpServer, client_cert_required, refuse_exposed, server_for


class EndpointSource(Source):
    default_listen: ClassVar[str] = "127.0.0.1:0"
    settings: ClassVar[dict[str, Setting]] = {
        **LISTENER_SETTINGS,
        "max_frame_size": Setting(Size(min=1024), "16MiB", "Largest Thrift frame accepted (checked before reading)"),
        "frame_timeout": Setting(Duration(), "30s", "A frame must arrive within this plus its size at 256KiB/s"),
    }

    def configure(self) -> None:
        c = self.config
        # Scribe and Flume clients send no credentials: beyond loopback only mutual TLS says who they are.
        refuse_exposed(c.listen[0], authenticated=client_cert_required(c.tls), insecure=c.insecure,
                       file=self.context.config_file, key=f"sources.{self.name}.listen",
                       auth="tls with client_ca and require_client_cert")
        self._server: TcpServer | None = None

    def make_endpoint(self) -> Any:
        raise NotImplementedError

    def _deliver(self, chunks: Sequence[Chunk]) -> None:
        self.output.deliver(chunks)
        self.metrics.chunks_out.inc(len(chunks))
        self.metrics.bytes_out.inc(sum(len(c.data) for c in chunks))

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        self.output = output
        self._server = server_for(self, self.make_endpoint(), self.config.listen)
        self._server.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "source not started"
        return self._server.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=5.0)
            self._server = None

    def reads(self) -> list[str]:
        host, port = self.config.listen
        return [f"tcp:{host}:{port}"]
