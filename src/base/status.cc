#include "base/status.h"

namespace regcache {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidArgument:
      return "invalid_argument";
    case Code::kNotFound:
      return "not_found";
    case Code::kUnauthenticated:
      return "unauthenticated";
    case Code::kDenied:
      return "denied";
    case Code::kRateLimited:
      return "rate_limited";
    case Code::kUnavailable:
      return "unavailable";
    case Code::kIntegrity:
      return "integrity";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kAlreadyExists:
      return "already_exists";
    case Code::kIoError:
      return "io_error";
    case Code::kAborted:
      return "aborted";
    case Code::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code_)) + ": " + message_;
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  Status out(code_, context + ": " + message_);
  out.origin_ = origin_;
  return out;
}

Status Status::WithOrigin(Origin origin) const {
  if (ok()) return *this;
  Status out = *this;
  out.origin_ = origin;
  return out;
}

}  // namespace regcache
