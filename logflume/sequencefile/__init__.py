"""Hadoop SequenceFile (version 6) reading and writing in pure Python.

Sink files are SequenceFiles of Text (chunk metadata JSON) -> BytesWritable
(chunk bytes); see docs/sequencefile.md.
"""

from .codecs import CODEC_NAMES
from .errors import CorruptFileError, SequenceFileError, TruncatedFileError
from .reader import SequenceFileHeader, SequenceFileReader
from .writables import BYTES_WRITABLE, LONG_WRITABLE, NULL_WRITABLE, TEXT
from .writer import BLOCK_SIZE, SYNC_INTERVAL, SequenceFileWriter

__all__ = [
    "BLOCK_SIZE",
    "BYTES_WRITABLE",
    "CODEC_NAMES",
    "CorruptFileError",
    "LONG_WRITABLE",
    "NULL_WRITABLE",
    "SYNC_INTERVAL",
    "SequenceFileError",
    "SequenceFileHeader",
    "SequenceFileReader",
    "SequenceFileWriter",
    "TEXT",
    "TruncatedFileError",
]
