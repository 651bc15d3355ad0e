#include "app/exit_codes.h"

#include <cstdio>
#include <string>

namespace regcache::app {

int ExitCodeFor(const Status& s) {
  switch (s.code()) {
    case Code::kOk:
      return kExitOk;
    case Code::kInvalidArgument:
      return kExitInvalidInput;
    case Code::kUnsupported:
      return kExitInvalidInput;
    case Code::kUnauthenticated:
      return kExitAuth;
    case Code::kDenied:
      return kExitAuth;
    case Code::kNotFound:
      return kExitNotFound;
    case Code::kRateLimited:
      return kExitRateLimited;
    case Code::kUnavailable:
      return kExitUnavailable;
    case Code::kIntegrity:
      return kExitIntegrity;
    case Code::kAlreadyExists:
      return kExitConflict;
    default:
      return kExitFailure;
  }
}

int ReportFailure(const Status& s) {
  std::string msg = s.message();
  for (char& c : msg) {
    if (c == '\n') c = ' ';
  }
  std::fprintf(stderr, "regcache: %s: %s (%s)\n", CodeName(s.code()), msg.c_str(), HintFor(s));
  return ExitCodeFor(s);
}

const char* HintFor(const Status& s) {
  switch (s.code()) {
    case Code::kInvalidArgument:
      return "fix the input and run again";
    case Code::kUnsupported:
      return "this content cannot be copied as is";
    case Code::kUnauthenticated:
      return "check credentials (--src-creds/--dest-creds, docker login, or a credential helper)";
    case Code::kDenied:
      return "the credentials lack permission for this repository";
    case Code::kNotFound:
      return "check the reference; create the destination repository if the registry needs it";
    case Code::kRateLimited:
      return "wait for the quota to refill, or authenticate for a higher limit";
    case Code::kUnavailable:
      return "the registry is unreachable or failing; retry later";
    case Code::kIntegrity:
      return "the source served content that does not match its digest; nothing was tagged";
    case Code::kAlreadyExists:
      return "the destination tag is immutable; use another tag";
    default:
      return "see the message above";
  }
}

}  // namespace regcache::app
