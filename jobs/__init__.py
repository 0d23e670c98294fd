"""The back end: archive (exactly-once compaction of sink files) and demux (records per datatype)."""
