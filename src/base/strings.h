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

}  // namespace regcache
