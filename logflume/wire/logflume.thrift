// logflume agent -> collector protocol.
//
// Every request and reply is one logflume frame:
//   "LFW1" | u32 header_len | u64 body_len | header (a Thrift binary message) | bodies
// The header is a standard Thrift TBinaryProtocol message (strict) calling one
// method of the service below.  For `deliver`, the chunk bodies are NOT inside
// the Thrift message: they follow it, in the order of `Batch.chunks`, each
// `wire_length` bytes long, so a receiver reads them straight into reusable
// buffers (recv_into) instead of through the Thrift decoder.
namespace py logflume.wire

const i16 PROTOCOL_VERSION = 1

enum Status {
  OK = 0,         // the whole batch is durable in the collector's store
  TRY_LATER = 1,  // alive but behind: send again after delay_ms (to this or another collector)
  ERROR = 2,      // refused (bad token, bad batch, store failure): reason says why
  REFUSED = 3,    // never acceptable as sent (a source this identity may not send, metadata out of
                  // bounds): retrying the same chunks cannot help; Ack.chunk names the chunk when one is at fault
}

enum Compression {
  NONE = 0,
  ZSTD = 1,
  LZ4 = 2,
}

struct ChunkHeader {
  1: required string source,
  2: required string stream,
  3: required string datatype,
  4: required map<string, string> tags,
  5: required i64 seq_id,
  6: required string epoch,
  7: optional list<i64> record_ends,
  8: required i64 timestamp,
  9: required list<string> flags,
  10: required i64 length,        // bytes of the chunk once decompressed
  11: required i64 wire_length,   // bytes following the header for this chunk
  12: required Compression compression,
}

struct Batch {
  1: required i16 version,
  2: optional string token,       // ignored: the connection's Hello authenticated it
  3: required string sender,
  4: required list<ChunkHeader> chunks,
}

struct Ack {
  1: required Status status,
  2: required i32 delay_ms,
  3: required string reason,
  4: optional i32 chunk,          // REFUSED: index in Batch.chunks of the chunk refused for its metadata
}

struct Hello {
  1: required i16 version,
  2: optional string token,
  3: required string sender,
}

struct Welcome {
  1: required Status status,
  2: required i16 version,
  3: required string server,
  4: required i64 max_frame_size,
  5: required string reason,
}

service LogFlume {
  // Handshake: checks version and credentials (token or client certificate) before any data is
  // sent; the only call accepted before it succeeds, and its frame is at most 8 KiB.
  Welcome ping(1: Hello hello),
  // One batch; Ack.status OK only once every chunk is durable.
  Ack deliver(1: Batch batch),
}
