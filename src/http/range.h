// Single-range "Range: bytes=…" requests against a blob of known size.
#pragma once

#include <cstdint>
#include <string_view>

namespace regcache::http {

struct ByteRange {
  enum Kind { kFull, kPartial, kUnsatisfiable } kind = kFull;
  uint64_t start = 0;
  uint64_t length = 0;
};

// Empty header, a unit other than bytes, or a multi-range list: the full blob (a server may
// ignore Range). "bytes=a-b",
// "bytes=a-", "bytes=-n": a partial range, clamped to the blob. A start past the end, a reversed
// range or malformed syntax: unsatisfiable (416).
ByteRange ParseRange(std::string_view header, uint64_t size);

}  // namespace regcache::http
