"""raw: the record's text as one field, for datatypes nobody parses (yet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from logflume.processor import BatchContext, ParsedBatch, ParseError, Processor, RecordContext
from logflume.settings import Bool, Setting

if TYPE_CHECKING:
    import pyarrow as pa


class RawProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {
        "strict_utf8": Setting(Bool(), False, "Reject records that are not valid UTF-8 (else undecodable bytes "
                               "become U+FFFD)"),
    }

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        if self.config.strict_utf8:
            try:
                return {"message": record.decode("utf-8")}
            except UnicodeDecodeError:
                raise ParseError(_utf8_error(record)) from None
        return {"message": record.decode("utf-8", "replace")}

    def output_schema(self) -> pa.Schema:
        import pyarrow as pa

        return pa.schema([("message", pa.string())])

    def process_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        import pyarrow as pa

        from jobs.processors.columns import decode

        text, bad = decode(records)
        reasons = pa.nulls(len(records), pa.string())
        if bad is not None and self.config.strict_utf8:  # rare: the reasons name each record's first bad byte
            reasons = pa.array([_utf8_error(raw) if is_bad else None
                                for raw, is_bad in zip(records.to_pylist(), bad.to_pylist(), strict=True)],
                               pa.string())
        return ParsedBatch(pa.RecordBatch.from_arrays([text], schema=self.output_schema()), reasons)


def _utf8_error(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    return "not UTF-8"
