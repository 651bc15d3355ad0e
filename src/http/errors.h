// The one table from failures to HTTP status + OCI error code, and the OCI error JSON body.
#pragma once

#include <string>

#include "base/status.h"

namespace regcache::http {

// Which endpoint failed: the same "not found" is MANIFEST_UNKNOWN, BLOB_UNKNOWN or NAME_UNKNOWN.
enum class Endpoint { kManifest, kBlob, kTags, kReferrers, kOther };

struct ErrorSpec {
  int status;
  const char* code;
};

ErrorSpec ErrorFor(Code code, Endpoint endpoint);
// The same for a failure reported by an upstream: its refusal of this cache's credentials is a
// 403 DENIED to the client, not a 401 asking for the client's.
ErrorSpec UpstreamErrorFor(Code code, Endpoint endpoint);

// {"errors":[{"code":"…","message":"…","detail":{}}]}
std::string ErrorBody(const char* code, const std::string& message);

}  // namespace regcache::http
