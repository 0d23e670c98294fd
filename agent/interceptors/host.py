"""host: tag every chunk with the name (or address) of the machine the agent runs on."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.interceptor import Interceptor, check_tags, with_tags
from logflume.settings import Bool, Optional, Setting, Str


class HostInterceptor(Interceptor):
    """Tags each chunk with the host name (or its IP address): Flume's host interceptor."""

    settings: ClassVar[dict[str, Setting]] = {
        "tag": Setting(Str(), "host", "Tag name to set"),
        "use_ip": Setting(Bool(), False, "Use the host's IP address instead of its name"),
        "value": Setting(Optional(Str()), None, "Use this value instead of looking the host up (tests, containers)"),
        "preserve_existing": Setting(Bool(), False, "Keep the tag when the chunk already has it"),
    }

    def configure(self) -> None:
        cfg = self.config
        if cfg.value is not None:
            host = cfg.value
        elif cfg.use_ip:
            try:
                host = socket.gethostbyname(socket.gethostname())
            except OSError:
                host = "127.0.0.1"
        else:
            host = socket.gethostname()
        self.tags = {cfg.tag: host}
        check_tags(self.tags)

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        for chunk in chunks:
            with_tags(chunk, self.tags, self.config.preserve_existing)
        return chunks
