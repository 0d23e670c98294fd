"""The Thrift IDL files shipped with logflume, loaded once with thriftpy2.

``logflume.thrift`` is the agent -> collector protocol; ``scribe.thrift`` and
``flume.thrift`` are the compatibility services, byte for byte what Scribe and
Flume clients speak.
"""

from __future__ import annotations

from pathlib import Path

import thriftpy2

IDL_DIR = Path(__file__).resolve().parent

logflume_thrift = thriftpy2.load(str(IDL_DIR / "logflume.thrift"), module_name="logflume_wire_thrift")
scribe_thrift = thriftpy2.load(str(IDL_DIR / "scribe.thrift"), module_name="logflume_scribe_thrift")
flume_thrift = thriftpy2.load(str(IDL_DIR / "flume.thrift"), module_name="logflume_flume_thrift")

#: Version carried in every Hello and Batch; a collector refuses other versions with a clear reason.
PROTOCOL_VERSION: int = logflume_thrift.PROTOCOL_VERSION
Status = logflume_thrift.Status
Compression = logflume_thrift.Compression
