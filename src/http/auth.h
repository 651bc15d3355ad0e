// Downstream authentication of `regcache serve`: HTTP Basic credentials checked against an
// htpasswd file of bcrypt entries, a cache of recent verifications so that a pull's many
// requests cost one bcrypt run, and a per-address limit on failed logins. See docs/serve.md.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "cache/metrics.h"

namespace regcache::http {

struct AuthOptions {
  std::string htpasswd;  // path of the htpasswd file; empty: anonymous access, no checks at all
  std::string realm = "regcache";  // in WWW-Authenticate: Basic realm="…"
  // Request paths (without the query) answered without credentials. Never /v2 paths.
  std::vector<std::string> anonymous = {"/healthz", "/readyz", "/metrics"};
  // An address with max_failures failed logins within failure_window has every request that
  // needs credentials answered 429 for `lockout`.
  int max_failures = 5;
  std::chrono::seconds failure_window{60};
  std::chrono::seconds lockout{60};
  // A credential verified by bcrypt is accepted without another run for this long.
  std::chrono::seconds verified_ttl{300};
  size_t max_verified = 4096;            // credentials remembered as verified
  size_t max_tracked_addresses = 16384;  // addresses with failed logins remembered
};

// kInvalidArgument naming the setting (as in the config's auth: section) that is out of range.
Status ValidateAuthOptions(const AuthOptions& options);

// The users of one htpasswd file, immutable once loaded (a reload builds a new one).
class Htpasswd {
 public:
  // Lines are "user:hash"; blank lines and lines starting with '#' are skipped. Only bcrypt
  // hashes ($2y$, $2b$, $2a$, as `htpasswd -B` writes them) are accepted: any other hash, a
  // malformed line, a duplicate user or a file without users is kInvalidArgument naming
  // `where` and the line, so that a user nobody could log in as is found at start-up.
  static Result<std::shared_ptr<const Htpasswd>> Parse(std::string_view text,
                                                       const std::string& where);
  static Result<std::shared_ptr<const Htpasswd>> Load(const std::string& path);

  // Runs bcrypt: tens to hundreds of milliseconds, never on the event loop. An unknown user
  // costs as much as a known one (checked against a dummy hash of the same cost), so timing
  // does not tell which users exist.
  bool Verify(std::string_view user, std::string_view password) const;
  size_t size() const { return hashes_.size(); }

 private:
  std::unordered_map<std::string, std::string> hashes_;
  std::string dummy_;
};

// Failed logins per client address, bounded in memory: past the bound, addresses whose window
// and lockout are over are forgotten first, then any that is not locked out.
class FailureLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  FailureLimiter(int max_failures, Clock::duration window, Clock::duration lockout,
                 size_t max_tracked);

  // Seconds (rounded up) until `address` may try again; 0 when it is not locked out.
  int64_t LockedFor(const std::string& address, Clock::time_point now);
  // Counts a failure; true when it locks the address out.
  bool RecordFailure(const std::string& address, Clock::time_point now);
  // False when no address can be locked out at `now`: the lock-free check every request makes.
  bool AnyLocked(Clock::time_point now) const {
    return now.time_since_epoch().count() < latest_unlock_.load(std::memory_order_relaxed);
  }
  size_t tracked();

 private:
  struct Entry {
    int failures = 0;
    Clock::time_point window_start;
    Clock::time_point locked_until;
  };
  const int max_failures_;
  const Clock::duration window_, lockout_;
  const size_t max_tracked_;
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::atomic<int64_t> latest_unlock_{0};  // the latest locked_until of any address
};

// What the server asks about each request when authentication is configured. Thread-safe.
class Authenticator {
 public:
  using Clock = std::chrono::steady_clock;

  // Loads the htpasswd file. `metrics` (may be null) counts failures and lockouts.
  static Result<std::shared_ptr<Authenticator>> Create(AuthOptions options,
                                                       cache::Metrics* metrics);
  ~Authenticator();

  // Re-reads the htpasswd file and swaps the user set in at once; on error the old set stays
  // and the error is returned. Credentials verified against the old set must be verified again.
  Status Reload();
  // The same with a set loaded already (e.g. from another file, checked before a live reload
  // applies anything).
  void SetUsers(std::shared_ptr<const Htpasswd> users);

  const AuthOptions& options() const { return options_; }
  // The WWW-Authenticate value of a 401: Basic realm="…".
  const std::string& challenge() const { return challenge_; }
  size_t users() const;

  // Whether a request for `path` (without the query) needs credentials.
  bool Required(std::string_view path) const;

  // The hit path's check, on the event loop: true when `authorization` carries Basic
  // credentials verified within verified_ttl and no address is locked out. One hash and one
  // lookup under a shared lock, no allocation; false means "ask Screen".
  bool Recognized(std::string_view authorization) const;

  // The cheap part of the full check, on the event loop. Ok with *verify false: allowed. Ok
  // with *verify true: only bcrypt can tell; call Verify on a worker thread. Otherwise the
  // refusal: kUnauthenticated (no Basic credentials: 401 with the challenge) or kRateLimited
  // carrying the seconds to wait (the address is locked out: 429 + Retry-After).
  Status Screen(std::string_view authorization, const std::string& peer, bool* verify);

  // Runs bcrypt (blocking). Ok, kUnauthenticated (wrong or malformed credentials: counted
  // against `peer` and logged with the user name, never the password) or kRateLimited.
  Status Verify(std::string_view authorization, const std::string& peer);

 private:
  using Fingerprint = std::array<unsigned char, 32>;
  struct FingerprintHash {
    size_t operator()(const Fingerprint& f) const;
  };

  explicit Authenticator(AuthOptions options, cache::Metrics* metrics);
  Fingerprint FingerprintOf(std::string_view token) const;
  bool Cached(const Fingerprint& f, Clock::time_point now) const;
  void Remember(const Fingerprint& f, uint64_t generation, Clock::time_point now);
  Status LockedOut(int64_t seconds);

  const AuthOptions options_;
  cache::Metrics* const metrics_;
  const std::string challenge_;
  std::array<unsigned char, 32> salt_{};  // per process: fingerprints mean nothing elsewhere
  struct Digest;
  std::unique_ptr<Digest> digest_;
  FailureLimiter limiter_;

  // The user set, and the credentials verified against it (fingerprint -> until when): the
  // set is replaced whole, and that empties the cache and bumps the generation, so that a
  // verification that ran against the old set is not remembered.
  mutable std::shared_mutex verified_mu_;
  std::shared_ptr<const Htpasswd> users_;
  std::unordered_map<Fingerprint, Clock::time_point, FingerprintHash> verified_;
  uint64_t generation_ = 0;
};

}  // namespace regcache::http
