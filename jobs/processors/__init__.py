"""Built-in demux processors, one per module: raw, syslog, access, json, regex."""
