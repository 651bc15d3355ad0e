// Fuzzes Range header parsing. Input: "<blob size>\n<Range header value>"; when the first line is
// not a number, the whole input is the header and its length the blob size.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/strings.h"
#include "check.h"
#include "http/range.h"

using regcache::http::ByteRange;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view header = input;
  uint64_t blob_size = size;
  size_t nl = input.find('\n');
  if (nl != std::string_view::npos) {
    if (auto n = regcache::ParseUint(input.substr(0, nl))) {
      blob_size = *n;
      header = input.substr(nl + 1);
    }
  }

  ByteRange r = regcache::http::ParseRange(header, blob_size);
  switch (r.kind) {
    case ByteRange::kFull:
      FUZZ_CHECK(r.start == 0 && r.length == blob_size);
      break;
    case ByteRange::kPartial:
      // A non-empty range inside the blob, with no overflow in start + length.
      FUZZ_CHECK(r.length >= 1);
      FUZZ_CHECK(r.start < blob_size);
      FUZZ_CHECK(r.length <= blob_size - r.start);
      break;
    case ByteRange::kUnsatisfiable:
      FUZZ_CHECK(r.length == 0);
      break;
  }
  // An absent header always means the whole blob.
  if (regcache::Trim(header).empty()) FUZZ_CHECK(r.kind == ByteRange::kFull);
  return 0;
}
