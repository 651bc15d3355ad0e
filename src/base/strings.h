// Small string helpers shared by every module.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace regcache {

std::string ToLower(std::string_view s);
bool StartsWith(std::string_view s, std::string_view prefix);
bool EndsWith(std::string_view s, std::string_view suffix);
std::string_view Trim(std::string_view s);
std::vector<std::string> Split(std::string_view s, char sep);
// Whether `pred` holds for every part of `s` split at `sep` (empty parts included), without
// allocating: for validation on the request path.
template <typename Pred>
bool AllParts(std::string_view s, char sep, Pred&& pred) {
  while (true) {
    size_t at = s.find(sep);
    if (!pred(s.substr(0, at))) return false;
    if (at == std::string_view::npos) return true;
    s.remove_prefix(at + 1);
  }
}
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// Parses a non-negative decimal integer; nullopt on anything else (sign, junk, overflow).
std::optional<uint64_t> ParseUint(std::string_view s);

// RFC 3986 percent-encoding of everything but unreserved characters.
std::string UrlEncode(std::string_view s);

std::string Base64Encode(std::string_view data);
// Standard or URL-safe alphabet, padding optional; nullopt on invalid input.
std::optional<std::string> Base64Decode(std::string_view data);

// "12.3 MiB" style.
std::string HumanBytes(uint64_t bytes);

// Text someone else chose, made fit for one log or error line: at most `max_chars` characters,
// printable ASCII kept, anything else shown as '?', "…" where it was cut.
std::string PrintablePrefix(std::string_view s, size_t max_chars);

}  // namespace regcache
