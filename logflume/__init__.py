"""logflume: log collection in chunks, from servers to Hadoop SequenceFiles, exactly once after archive."""

__version__ = "0.1.0"
