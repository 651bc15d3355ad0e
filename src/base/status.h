// Status and Result: the error currency of regcache. No code on a request or copy path throws;
// every fallible call returns one of these, and callers map Code to HTTP/OCI codes or exit codes
// in one table each (see app/exit_codes.h).
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace regcache {

// What went wrong, coarse enough to choose an exit code or HTTP status from.
enum class Code {
  kOk = 0,
  kInvalidArgument,  // malformed reference, digest, manifest, config; the user must fix input
  kNotFound,         // manifest, blob, repository or tag does not exist
  kUnauthenticated,  // credentials missing or rejected (401)
  kDenied,           // authenticated but not allowed (403)
  kRateLimited,      // 429 / TOOMANYREQUESTS from a registry
  kUnavailable,      // network error, timeout, connection reset, 5xx: may succeed on retry
  kIntegrity,        // content does not match its digest or declared size
  kUnsupported,      // a valid request we do not implement (e.g. schema1 manifests)
  kAlreadyExists,    // e.g. an immutable tag already points elsewhere
  kIoError,          // local filesystem failure
  kAborted,          // cancelled by the caller
  kInternal,         // a bug
};

// Stable lowercase name of a code, used in logs and JSON output.
const char* CodeName(Code code);

// Whom a failure is to be blamed on, where that decides what a client is told or where the next
// attempt goes: an upstream that sent bad content is named as such; the backing registry's bad
// copy sends the next fill to the upstream instead. Data, never parsed out of the message.
enum class Origin : uint8_t {
  kUnspecified = 0,
  kUpstream,  // an upstream registry of `regcache serve`, or the source of a copy
  kBacking,   // the backing registry of `regcache serve`
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // "not_found: manifest unknown" style, for logs.
  std::string ToString() const;

  // Returns a copy whose message is prefixed with context ("copying sha256:ab..: " + message).
  Status WithContext(const std::string& context) const;

  Origin origin() const { return origin_; }
  // A copy blamed on `origin` (an ok Status stays as it is).
  Status WithOrigin(Origin origin) const;

 private:
  Code code_ = Code::kOk;
  Origin origin_ = Origin::kUnspecified;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return Status(Code::kInvalidArgument, std::move(m));
}
inline Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
inline Status Unavailable(std::string m) { return Status(Code::kUnavailable, std::move(m)); }
inline Status Integrity(std::string m) { return Status(Code::kIntegrity, std::move(m)); }
inline Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }
inline Status IoError(std::string m) { return Status(Code::kIoError, std::move(m)); }
inline Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }

// A value or a non-ok Status. Accessing value() on an error is a bug (asserted).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace regcache

// Propagates a non-ok Status from an expression returning Status.
#define RC_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::regcache::Status rc_status_ = (expr);  \
    if (!rc_status_.ok()) return rc_status_; \
  } while (0)

#define RC_CONCAT_INNER(a, b) a##b
#define RC_CONCAT(a, b) RC_CONCAT_INNER(a, b)
// Declares `lhs` from a Result-returning expression, or returns its Status.
#define RC_ASSIGN_OR_RETURN(lhs, expr) \
  RC_ASSIGN_OR_RETURN_IMPL(RC_CONCAT(rc_result_, __LINE__), lhs, expr)
#define RC_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
