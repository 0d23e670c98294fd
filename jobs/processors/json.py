"""json: JSON Lines, one object per record; its keys become the record's fields."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from logflume.processor import ParseError, Processor, RecordContext
from logflume.settings import Setting, Str


class JsonProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {
        "field": Setting(Str(), "", "Put the parsed object under this one field instead of spreading its keys "
                         "(keeps the output schema fixed)"),
    }

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        try:
            obj = json.loads(record)
        except UnicodeDecodeError as exc:
            raise ParseError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
        except json.JSONDecodeError as exc:
            raise ParseError(f"not JSON: {exc.msg} at column {exc.colno}") from None
        if not isinstance(obj, dict):
            raise ParseError(f"JSON {type(obj).__name__}, expected an object")
        if self.config.field:
            return {self.config.field: obj}
        return obj
