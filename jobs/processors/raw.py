"""raw: the record's text as one field, for datatypes nobody parses (yet)."""

from __future__ import annotations

from typing import Any, ClassVar

from jobs.processor import ParseError, Processor, RecordContext
from logflume.settings import Bool, Setting


class RawProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {
        "strict_utf8": Setting(Bool(), False, "Reject records that are not valid UTF-8 (else undecodable bytes "
                               "become U+FFFD)"),
    }

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        if self.config.strict_utf8:
            try:
                return {"message": record.decode("utf-8")}
            except UnicodeDecodeError as exc:
                raise ParseError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
        return {"message": record.decode("utf-8", "replace")}
