#include "http/errors.h"

#include <nlohmann/json.hpp>

namespace regcache::http {

ErrorSpec ErrorFor(Code code, Endpoint endpoint) {
  switch (code) {
    case Code::kNotFound:
      switch (endpoint) {
        case Endpoint::kManifest:
          return {404, "MANIFEST_UNKNOWN"};
        case Endpoint::kBlob:
          return {404, "BLOB_UNKNOWN"};
        default:
          return {404, "NAME_UNKNOWN"};
      }
    case Code::kInvalidArgument:
      switch (endpoint) {
        case Endpoint::kBlob:
          return {400, "DIGEST_INVALID"};
        case Endpoint::kManifest:
          return {400, "MANIFEST_INVALID"};
        case Endpoint::kTags:
          // A tag list's bad `n` or `last` (a bad repository name is reported as kOther).
          // distribution's code for an unusable `n`.
          return {400, "PAGINATION_NUMBER_INVALID"};
        default:
          return {400, "NAME_INVALID"};
      }
    case Code::kRateLimited:
      return {429, "TOOMANYREQUESTS"};
    case Code::kUnauthenticated:
      // The client's credentials (an upstream refusing this cache's own is DENIED: see
      // UpstreamErrorFor).
      return {401, "UNAUTHORIZED"};
    case Code::kDenied:
      return {403, "DENIED"};
    case Code::kUnavailable:
      return {503, "UNAVAILABLE"};
    case Code::kIntegrity:
      return {502, "UNAVAILABLE"};  // upstream sent content that failed its digest
    case Code::kUnsupported:
      return {502, "UNSUPPORTED"};  // e.g. upstream holds a schema1 manifest
    case Code::kAlreadyExists:
      return {409, "DENIED"};
    default:
      return {500, "UNKNOWN"};
  }
}

ErrorSpec UpstreamErrorFor(Code code, Endpoint endpoint) {
  // A client told 401 would retry with its own credentials, which are not what upstream refused.
  return ErrorFor(code == Code::kUnauthenticated ? Code::kDenied : code, endpoint);
}

std::string ErrorBody(const char* code, const std::string& message) {
  nlohmann::json j = {
      {"errors", {{{"code", code}, {"message", message}, {"detail", nlohmann::json::object()}}}}};
  // Messages may quote client input: invalid UTF-8 is replaced, never thrown on.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace regcache::http
