"""Moved to :mod:`logflume.chunking`; this name lives only until ``agent/sources/tail.py`` imports from there."""

from logflume.chunking import MultilinePattern, RecordChunker

__all__ = ["MultilinePattern", "RecordChunker"]
