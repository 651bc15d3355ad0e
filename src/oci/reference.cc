#include "oci/reference.h"

#include <cctype>

#include "base/strings.h"

namespace regcache::oci {
namespace {

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// path-component := [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
bool IsValidPathComponent(std::string_view c) {
  size_t i = 0;
  auto alnum_run = [&]() {
    size_t start = i;
    while (i < c.size() && IsLowerAlnum(c[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < c.size()) {
    if (c[i] == '.') {
      ++i;
    } else if (c[i] == '_') {
      ++i;
      if (i < c.size() && c[i] == '_') ++i;
    } else if (c[i] == '-') {
      while (i < c.size() && c[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

bool IsValidDomainComponent(std::string_view c) {
  if (c.empty()) return false;
  for (char ch : c) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') return false;
  }
  return c.front() != '-' && c.back() != '-';
}

bool IsIdentifier64Hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool IsDockerHubAlias(std::string_view host) {
  return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
}

}  // namespace

bool IsValidRepository(std::string_view repository) {
  if (repository.empty() || repository.size() > kMaxNameLength) return false;
  return AllParts(repository, '/',
                  [](std::string_view part) { return IsValidPathComponent(part); });
}

bool IsValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (!word(tag[0])) return false;
  for (char c : tag.substr(1)) {
    if (!word(c) && c != '.' && c != '-') return false;
  }
  return true;
}

bool IsValidRegistryHost(std::string_view host) {
  if (host.empty()) return false;
  std::string_view name = host;
  std::string_view port;
  if (host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos || close < 3) return false;
    for (char c : host.substr(1, close - 1)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':') return false;
    }
    std::string_view rest = host.substr(close + 1);
    if (rest.empty()) return true;
    if (rest.front() != ':') return false;
    port = rest.substr(1);
    if (port.empty() || !ParseUint(port) || *ParseUint(port) > 65535) return false;
    return true;
  }
  size_t colon = host.find(':');
  if (colon != std::string_view::npos) {
    name = host.substr(0, colon);
    port = host.substr(colon + 1);
    if (port.empty() || !ParseUint(port) || *ParseUint(port) > 65535) return false;
  }
  if (!AllParts(name, '.', [](std::string_view part) { return IsValidDomainComponent(part); })) {
    return false;
  }
  return true;
}

std::string NormalizeRegistryHost(std::string_view host) {
  std::string h = ToLower(Trim(host));
  if (StartsWith(h, "https://")) h = h.substr(8);
  if (StartsWith(h, "http://")) h = h.substr(7);
  size_t slash = h.find('/');
  if (slash != std::string::npos) h = h.substr(0, slash);
  // Blanks between scheme, host and path ("https:// ghcr.io /v2/") are not part of the host.
  h = std::string(Trim(h));
  if (IsDockerHubAlias(h)) return std::string(kDockerHub);
  return h;
}

std::string RegistryApiHost(std::string_view registry) {
  if (registry == kDockerHub) return std::string(kDockerHubApiHost);
  return std::string(registry);
}

// Strings here are built by appending, not with "literal" + std::string&&: GCC 12 at -O3 inlines
// that operator into an insert at offset 0 and warns that a memcpy of ~2^63 bytes may overlap (a
// -Wrestrict false positive in libstdc++'s string code), which broke Release builds under -Werror.
std::string Reference::String() const {
  std::string s = Name();
  if (!tag.empty()) s.append(1, ':').append(tag);
  if (digest) s.append(1, '@').append(digest->str());
  return s;
}

Result<Reference> ParseReference(std::string_view text, bool default_tag) {
  std::string quoted(1, '\'');  // appended, not "'" + std::string(text): see Reference::String
  quoted.append(text).push_back('\'');
  if (text.empty()) return InvalidArgument("empty image reference");
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      return InvalidArgument("image reference " + quoted +
                             " contains whitespace or control characters");
  }
  if (IsIdentifier64Hex(text)) {
    return InvalidArgument("image reference " + quoted +
                           " is a 64-character hex string; use repository@sha256:<hex>");
  }

  Reference ref;
  std::string_view rest = text;
  size_t at = rest.find('@');
  if (at != std::string_view::npos) {
    auto digest = Digest::Parse(rest.substr(at + 1));
    if (!digest.ok()) {
      return InvalidArgument("image reference " + quoted + ": " + digest.status().message());
    }
    ref.digest = *digest;
    rest = rest.substr(0, at);
  }

  // A tag is after the last ':' that follows the last '/'; an earlier ':' is a registry port.
  size_t last_slash = rest.rfind('/');
  size_t last_colon = rest.rfind(':');
  if (last_colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || last_colon > last_slash)) {
    std::string_view tag = rest.substr(last_colon + 1);
    if (!IsValidTag(tag)) {
      return InvalidArgument("image reference " + quoted + ": invalid tag '" + std::string(tag) +
                             "' (allowed: [A-Za-z0-9_][A-Za-z0-9._-]{0,127})");
    }
    ref.tag = std::string(tag);
    rest = rest.substr(0, last_colon);
  }

  // Registry part, as docker's splitDockerDomain decides it.
  size_t slash = rest.find('/');
  std::string_view domain;
  std::string_view remainder = rest;
  if (slash != std::string_view::npos) {
    std::string_view first = rest.substr(0, slash);
    bool looks_like_host = first.find_first_of(".:") != std::string_view::npos ||
                           first == "localhost" || ToLower(first) != first;
    if (looks_like_host) {
      domain = first;
      remainder = rest.substr(slash + 1);
    }
  }
  if (domain.empty()) {
    ref.registry = std::string(kDockerHub);
  } else {
    if (!IsValidRegistryHost(domain)) {
      return InvalidArgument("image reference " + quoted + ": invalid registry '" +
                             std::string(domain) + "'");
    }
    ref.registry =
        IsDockerHubAlias(ToLower(domain)) ? std::string(kDockerHub) : std::string(domain);
  }
  if (remainder.empty()) {
    return InvalidArgument("image reference " + quoted + ": missing repository name");
  }
  if (ToLower(remainder) != remainder) {
    return InvalidArgument("image reference " + quoted + ": repository name '" +
                           std::string(remainder) + "' must be lowercase");
  }
  ref.repository = std::string(remainder);
  if (ref.registry == kDockerHub && ref.repository.find('/') == std::string::npos) {
    ref.repository = "library/" + ref.repository;
  }
  if (!IsValidRepository(ref.repository)) {
    return InvalidArgument(
        "image reference " + quoted + ": invalid repository name '" + std::string(remainder) +
        "' (components of [a-z0-9] separated by '.', '_', '__' or '-', joined by '/')");
  }
  if (ref.Name().size() > kMaxNameLength) {
    return InvalidArgument("image reference " + quoted + ": name is longer than 255 characters");
  }
  if (ref.tag.empty() && !ref.digest && default_tag) ref.tag = "latest";
  return ref;
}

bool LooksLikeRegistryHost(std::string_view component) {
  return component == "localhost" || component.find('.') != std::string_view::npos ||
         component.find(':') != std::string_view::npos;
}

}  // namespace regcache::oci
