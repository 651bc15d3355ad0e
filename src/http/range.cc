#include "http/range.h"

#include "base/strings.h"

namespace regcache::http {

ByteRange ParseRange(std::string_view header, uint64_t size) {
  ByteRange full{ByteRange::kFull, 0, size};
  ByteRange bad{ByteRange::kUnsatisfiable, 0, 0};
  header = Trim(header);
  if (header.empty()) return full;
  // RFC 9110: a range unit the server does not know is ignored, not refused.
  size_t eq = header.find('=');
  if (eq == std::string_view::npos) return bad;
  if (!EqualsIgnoreCase(Trim(header.substr(0, eq)), "bytes")) return full;
  std::string_view spec = Trim(header.substr(eq + 1));
  if (spec.find(',') != std::string_view::npos) return full;
  size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return bad;
  std::string_view a = Trim(spec.substr(0, dash)), b = Trim(spec.substr(dash + 1));
  if (a.empty()) {
    auto n = ParseUint(b);
    if (!n || *n == 0 || size == 0) return bad;
    uint64_t len = std::min(*n, size);
    return {ByteRange::kPartial, size - len, len};
  }
  auto start = ParseUint(a);
  if (!start || *start >= size) return bad;
  uint64_t end = size - 1;
  if (!b.empty()) {
    auto e = ParseUint(b);
    if (!e || *e < *start) return bad;
    end = std::min(*e, size - 1);
  }
  return {ByteRange::kPartial, *start, end - *start + 1};
}

}  // namespace regcache::http
