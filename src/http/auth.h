// Downstream authentication of `regcache serve`: HTTP Basic credentials checked against an
// htpasswd file of bcrypt entries, a cache of recent verifications so that a pull's many
// requests cost one bcrypt run, and back-offs on failed logins per client address and user
// name. See docs/serve.md.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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
  // Guessing is slowed per client address and user name, so that a guesser behind a shared
  // address (a NAT, a CI proxy) slows only itself (see FailureLimiter): after `user_failures`
  // failed logins as one user from one address, that user name waits `failure_delay` there,
  // doubled by each further failure up to `max_failure_delay`; a success, or `failure_window`
  // without a failure, starts it over. Over all user names, an address may fail
  // `address_failures` times per `failure_window`.
  int user_failures = 3;
  std::chrono::seconds failure_delay{1};
  std::chrono::seconds max_failure_delay{300};
  std::chrono::seconds failure_window{900};
  int address_failures = 50;
  // A credential verified by bcrypt is accepted without another run for this long.
  std::chrono::seconds verified_ttl{300};
  size_t max_verified = 4096;            // credentials remembered as verified
  size_t max_tracked_addresses = 16384;  // addresses with failed logins remembered
};

// kInvalidArgument naming the setting (as in the config's auth: section) that is out of range.
Status ValidateAuthOptions(const AuthOptions& options);

// bcrypt reads at most this many bytes of a password; a longer one is refused rather than
// checked as its first 72 bytes (htpasswd -B stores only those).
inline constexpr size_t kBcryptMaxPasswordBytes = 72;

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
  // costs as much as the dearest known one (checked against a dummy hash of the highest cost
  // in the file), so timing does not tell which users exist. A password longer than
  // kBcryptMaxPasswordBytes is false for every user, without a bcrypt run.
  bool Verify(std::string_view user, std::string_view password) const;
  size_t size() const { return hashes_.size(); }
  // The highest bcrypt cost in the file: what checking an unknown user costs.
  int max_cost() const { return max_cost_; }
  // Whether `other` has the same users with the same hashes.
  bool SameEntries(const Htpasswd& other) const { return hashes_ == other.hashes_; }

 private:
  std::unordered_map<std::string, std::string> hashes_;
  std::string dummy_;
  int max_cost_ = 0;
};

// Failed logins, counted per client address and user name, bounded in memory. Two limits,
// both back-offs rather than a wall:
//  - per user name and address: after `user_failures` failures, that pair waits
//    `failure_delay`, doubled by each further failure up to `max_failure_delay`; a success or
//    `window` without a failure forgets them. One guesser slows only its own guesses, not the
//    others behind its address, nor the same user elsewhere.
//  - per address, over all user names: a budget of `address_failures` per `window`, refilled
//    evenly; when spent, the address's logins that need bcrypt wait until it refills, so one
//    address spraying many user names is slowed too. Credentials verified recently are not
//    held back by it (Scope::kUser).
// At most `max_tracked_addresses` addresses, each with its 8 most recent user names, are
// remembered: past the bound, quiet ones are forgotten first.
class FailureLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  struct Policy {
    int user_failures = 3;
    Clock::duration failure_delay = std::chrono::seconds(1);
    Clock::duration max_failure_delay = std::chrono::minutes(5);
    Clock::duration window = std::chrono::minutes(15);
    int address_failures = 50;
    size_t max_tracked_addresses = 16384;
  };
  // What an attempt is held to.
  enum class Scope {
    kUser,            // a credential verified recently: only its user name's back-off here
    kUserAndAddress,  // anything else: the address's budget too
  };

  explicit FailureLimiter(Policy policy);

  // Seconds (rounded up) until a login as `user` from `address` may be checked; 0: now. An
  // attempt the address's budget refuses counts as a failure of `user` from `address` (not of
  // the address): while an address waits, its guesses for one user name could otherwise go on
  // being matched against the credentials verified recently, at no cost.
  int64_t Check(const std::string& address, std::string_view user, Scope scope,
                Clock::time_point now);

  struct Failure {
    int failures = 0;            // of this user name from this address, in a row
    int64_t user_wait_s = 0;     // how long that pair must now wait (0: not yet)
    bool address_spent = false;  // this failure spent the address's budget
  };
  Failure RecordFailure(const std::string& address, std::string_view user, Clock::time_point now);
  // Forgets the failures of `user` from `address` (a typo, then the right password).
  void RecordSuccess(const std::string& address, std::string_view user);

  // False when no user name waits anywhere at `now`: the lock-free check the hit path makes
  // before it accepts a credential verified recently.
  bool AnyUserWaits(Clock::time_point now) const {
    return now.time_since_epoch().count() < latest_user_wait_.load(std::memory_order_relaxed);
  }
  size_t tracked();

 private:
  struct UserEntry {
    size_t user = 0;  // hash of the user name
    int failures = 0;
    Clock::time_point last_failure;
    Clock::time_point wait_until;
  };
  struct AddressEntry {
    // The address's budget as a theoretical arrival time (GCRA): each failure moves it on by
    // window / address_failures; the budget is spent while it lies more than a window ahead.
    Clock::time_point budget_at;
    std::vector<UserEntry> users;
  };
  bool Quiet(const UserEntry& u, Clock::time_point now) const;
  bool Quiet(const AddressEntry& a, Clock::time_point now) const;
  Clock::duration BudgetWait(const AddressEntry& a, Clock::time_point now) const;
  UserEntry& UserOf(AddressEntry& a, size_t user, Clock::time_point now);
  void CountUserFailure(UserEntry& u, Clock::time_point now, Failure* out);
  AddressEntry& AddressOf(const std::string& address, Clock::time_point now);

  const Policy policy_;
  const Clock::duration budget_step_;  // window / address_failures
  std::mutex mu_;
  std::unordered_map<std::string, AddressEntry> entries_;
  std::atomic<int64_t> latest_user_wait_{0};  // the latest wait_until of any user entry
};

// What the server asks about each request when authentication is configured. Thread-safe.
class Authenticator {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = Clock::time_point (*)();
  // A credential that bcrypt verified stays known-good this long (or verified_ttl, if longer):
  // it is verified again when verified_ttl is over, but ahead of guesses (Check::kKnownGood).
  static constexpr std::chrono::hours kKnownGoodFor{24};

  // Loads the htpasswd file. `metrics` (may be null) counts failures and refusals. `now` (null:
  // the steady clock) is where every decision reads the time; tests pass their own.
  static Result<std::shared_ptr<Authenticator>> Create(AuthOptions options, cache::Metrics* metrics,
                                                       Now now = nullptr);
  ~Authenticator();

  // Re-reads the htpasswd file and swaps the user set in at once; on error the old set stays
  // and the error is returned. Credentials verified against the old set must be verified again,
  // unless the new one has the very same entries.
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
  // credentials verified within verified_ttl and no user name is waiting out a back-off
  // anywhere. One hash and one lookup under a shared lock, no allocation; false means "ask
  // Screen".
  bool Recognized(std::string_view authorization) const;

  // What Screen leaves to do.
  enum class Check {
    kDone,       // allowed: these credentials verified within verified_ttl
    kKnownGood,  // bcrypt must run, but these exact credentials verified within kKnownGoodFor:
                 // worth running before guesses (only their holder can send them)
    kUnknown,    // bcrypt must run: new credentials, or a guess
  };

  // The cheap part of the full check, on the event loop. Ok: allowed when *check is kDone,
  // else Verify must run on a worker thread. Otherwise the refusal: kUnauthenticated (no Basic
  // credentials: 401 with the challenge) or kRateLimited carrying the seconds to wait (that
  // user name from `peer`, or `peer` as a whole, is backing off: 429 + Retry-After).
  // Credentials verified recently are answered before the address's budget is looked at: other
  // users' failures from a shared address do not refuse them.
  Status Screen(std::string_view authorization, const std::string& peer, Check* check);

  // Runs bcrypt (blocking). Ok, kUnauthenticated (wrong or malformed credentials, or a password
  // longer than bcrypt reads: counted against the user name and `peer`, and logged with the
  // user name, never the password) or kRateLimited.
  Status Verify(std::string_view authorization, const std::string& peer);

 private:
  using Fingerprint = std::array<unsigned char, 32>;
  struct FingerprintHash {
    size_t operator()(const Fingerprint& f) const;
  };

  Authenticator(AuthOptions options, cache::Metrics* metrics, Now now);
  Fingerprint FingerprintOf(std::string_view token) const;
  // When these credentials last verified against the current user set, if they did.
  std::optional<Clock::time_point> VerifiedAt(const Fingerprint& f) const;
  bool Cached(const Fingerprint& f, Clock::time_point now) const;
  void Remember(const Fingerprint& f, uint64_t generation, Clock::time_point now);
  Status Throttled(int64_t seconds, const char* why);

  const AuthOptions options_;
  cache::Metrics* const metrics_;
  const Now now_;
  const Clock::duration known_good_for_;
  const std::string challenge_;
  std::array<unsigned char, 32> salt_{};  // per process: fingerprints mean nothing elsewhere
  struct Digest;
  std::unique_ptr<Digest> digest_;
  FailureLimiter limiter_;

  // The user set, and the credentials verified against it (fingerprint -> when): the set is
  // replaced whole, and that empties the cache and bumps the generation, so that a
  // verification that ran against the old set is not remembered.
  mutable std::shared_mutex verified_mu_;
  std::shared_ptr<const Htpasswd> users_;
  std::unordered_map<Fingerprint, Clock::time_point, FingerprintHash> verified_;
  uint64_t generation_ = 0;
};

}  // namespace regcache::http
