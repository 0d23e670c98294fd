// Facebook Scribe's service, as scribed and its clients (scribe_cat, the
// Python loggers) speak it: framed transport, binary protocol.  Clients may
// write non-strict message headers; logflume accepts both.
namespace py scribe

enum ResultCode {
  OK = 0,
  TRY_LATER = 1,
}

struct LogEntry {
  1: string category,
  2: string message,
}

service scribe {
  ResultCode Log(1: list<LogEntry> messages),
}
