// The one table mapping Status codes to process exit codes, so scripts can branch on why
// `regcache ensure`/`sync` failed.
#pragma once

#include "base/status.h"

namespace regcache::app {

enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,       // anything not below (I/O, internal, a sync with failed items)
  kExitInvalidInput = 2,  // bad reference, flag, config or manifest
  kExitAuth = 3,          // credentials missing, rejected, or access denied
  kExitNotFound = 4,      // image, tag, platform or repository does not exist
  kExitRateLimited = 5,   // registry said 429 / TOOMANYREQUESTS
  kExitUnavailable = 6,   // network or upstream failure after retries
  kExitIntegrity = 7,     // content did not match its digest
  kExitConflict = 8,      // destination tag is immutable and points elsewhere
};

int ExitCodeFor(const Status& status);

// What to tell the user to do about a failure, one short clause.
const char* HintFor(const Status& status);

// Prints "regcache: <kind>: <message> (<hint>)" as one line on stderr; returns the exit code.
int ReportFailure(const Status& status);

}  // namespace regcache::app
