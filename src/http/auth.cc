#include "http/auth.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/strings.h"
#include "upstream/registry_client.h"

namespace regcache::http {
namespace {

using Clock = std::chrono::steady_clock;

// $2y$/$2b$/$2a$, a two-digit cost, then 22 characters of salt and 31 of hash.
bool IsBcrypt(std::string_view h) {
  if (h.size() != 60 || h[0] != '$' || h[1] != '2' || (h[2] != 'y' && h[2] != 'b' && h[2] != 'a') ||
      h[3] != '$' || !std::isdigit(static_cast<unsigned char>(h[4])) ||
      !std::isdigit(static_cast<unsigned char>(h[5])) || h[6] != '$') {
    return false;
  }
  int cost = (h[4] - '0') * 10 + (h[5] - '0');
  if (cost < 4 || cost > 31) return false;
  for (char c : h.substr(7)) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '/') return false;
  }
  return true;
}

// What a non-bcrypt entry is, for the start-up error.
std::string DescribeHash(std::string_view h) {
  if (StartsWith(h, "$apr1$")) return "an MD5 (apr1) hash";
  if (StartsWith(h, "{SHA}")) return "a SHA-1 hash";
  if (StartsWith(h, "$1$")) return "an MD5-crypt hash";
  if (StartsWith(h, "$5$") || StartsWith(h, "$6$")) return "a SHA-crypt hash";
  if (StartsWith(h, "$2")) return "a malformed bcrypt hash";
  if (h.empty()) return "no password hash";
  return "a crypt(3) or plain-text password";
}

// bcrypt(password) with the salt and cost of `hash`, compared with `hash` in constant time.
bool BcryptMatches(std::string_view password, const std::string& hash) {
  // crypt takes a C string: a password with a NUL byte in it would be checked cut short.
  if (password.find('\0') != std::string_view::npos) return false;
  std::string phrase(password);
  auto data = std::make_unique<crypt_data>();  // zeroed, as crypt_rn wants it
  const char* out = crypt_rn(phrase.c_str(), hash.c_str(), data.get(), sizeof(crypt_data));
  bool match = out != nullptr && out[0] != '*' && std::strlen(out) == hash.size() &&
               CRYPTO_memcmp(out, hash.data(), hash.size()) == 0;
  OPENSSL_cleanse(phrase.data(), phrase.size());
  OPENSSL_cleanse(data.get(), sizeof(crypt_data));
  return match;
}

// A user name as the log shows it: printable ASCII only, at most 64 characters.
std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (s.size() > 64) out += "…";
  return out;
}

// The token of "Basic <token>" (scheme case-insensitive); empty for anything else.
std::string_view BasicToken(std::string_view authorization) {
  authorization = Trim(authorization);
  if (authorization.size() < 6 || !EqualsIgnoreCase(authorization.substr(0, 5), "basic") ||
      (authorization[5] != ' ' && authorization[5] != '\t')) {
    return {};
  }
  return Trim(authorization.substr(6));
}

int64_t CeilSeconds(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::seconds>(d + std::chrono::seconds(1) -
                                                          Clock::duration(1))
      .count();
}

}  // namespace

Result<std::shared_ptr<const Htpasswd>> Htpasswd::Parse(std::string_view text,
                                                        const std::string& where) {
  auto h = std::make_shared<Htpasswd>();
  int line_no = 0;
  int cost = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = Trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    const std::string at = where + ":" + std::to_string(line_no);
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      return InvalidArgument(at + ": not a user:hash line");
    }
    std::string user(line.substr(0, colon));
    std::string_view hash = line.substr(colon + 1);
    if (!IsBcrypt(hash)) {
      return InvalidArgument(at + ": user '" + Printable(user) + "' has " + DescribeHash(hash) +
                             "; only bcrypt entries are accepted (create them with htpasswd -B)");
    }
    cost = std::max(cost, (hash[4] - '0') * 10 + (hash[5] - '0'));
    if (!h->hashes_.emplace(user, std::string(hash)).second) {
      return InvalidArgument(at + ": user '" + Printable(user) + "' appears twice");
    }
  }
  if (h->hashes_.empty()) {
    return InvalidArgument(where + ": no users (every request would be refused)");
  }
  // Unknown users are checked against this, at the highest cost in the file: at any lower one,
  // an unknown user would answer faster than the users of that cost.
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  auto data = std::make_unique<crypt_data>();
  if (!crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost), nullptr, 0, setting,
                        sizeof setting)) {
    return Internal("crypt_gensalt for bcrypt failed: " + std::string(std::strerror(errno)));
  }
  const char* dummy = crypt_rn("regcache", setting, data.get(), sizeof(crypt_data));
  if (!dummy || dummy[0] == '*') return Internal("this system's crypt library has no bcrypt");
  h->dummy_ = dummy;
  h->max_cost_ = cost;
  return std::shared_ptr<const Htpasswd>(std::move(h));
}

Result<std::shared_ptr<const Htpasswd>> Htpasswd::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return InvalidArgument("cannot read htpasswd file " + path + ": " + std::strerror(errno));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return Parse(ss.str(), path);
}

bool Htpasswd::Verify(std::string_view user, std::string_view password) const {
  // bcrypt would check only the first 72 bytes: a longer password would log in as any other
  // that shares them. Refused for every user alike, so this says nothing about who exists.
  if (password.size() > kBcryptMaxPasswordBytes) return false;
  auto it = hashes_.find(std::string(user));
  bool match = BcryptMatches(password, it == hashes_.end() ? dummy_ : it->second);
  return match && it != hashes_.end();
}

FailureLimiter::FailureLimiter(Policy policy)
    : policy_(policy), budget_step_(policy.window / std::max(1, policy.address_failures)) {}

bool FailureLimiter::Quiet(const UserEntry& u, Clock::time_point now) const {
  return u.wait_until <= now && now - u.last_failure > policy_.window;
}

bool FailureLimiter::Quiet(const AddressEntry& a, Clock::time_point now) const {
  return a.budget_at <= now && std::all_of(a.users.begin(), a.users.end(),
                                           [&](const UserEntry& u) { return Quiet(u, now); });
}

Clock::duration FailureLimiter::BudgetWait(const AddressEntry& a, Clock::time_point now) const {
  // address_failures failures at once put budget_at a window ahead; one more waits one step.
  const auto ahead = a.budget_at - now;
  return ahead > policy_.window - budget_step_ ? ahead - (policy_.window - budget_step_)
                                               : Clock::duration::zero();
}

FailureLimiter::AddressEntry& FailureLimiter::AddressOf(const std::string& address,
                                                        Clock::time_point now) {
  auto it = entries_.find(address);
  if (it != entries_.end()) return it->second;
  if (entries_.size() >= policy_.max_tracked_addresses) {
    std::erase_if(entries_, [&](const auto& kv) { return Quiet(kv.second, now); });
  }
  // Still full: memory stays bounded. An address whose budget is not spent loses its counts
  // first; a flood from that many addresses defeats per-address counting anyway.
  if (entries_.size() >= policy_.max_tracked_addresses) {
    auto victim = std::find_if(entries_.begin(), entries_.end(), [&](const auto& kv) {
      return BudgetWait(kv.second, now) == Clock::duration::zero();
    });
    entries_.erase(victim == entries_.end() ? entries_.begin() : victim);
  }
  return entries_.emplace(address, AddressEntry{}).first->second;
}

FailureLimiter::UserEntry& FailureLimiter::UserOf(AddressEntry& a, size_t user,
                                                  Clock::time_point now) {
  constexpr size_t kUsersPerAddress = 8;  // beyond, the address's budget does the limiting
  for (auto& u : a.users) {
    if (u.user == user) return u;
  }
  if (a.users.size() >= kUsersPerAddress) {
    std::erase_if(a.users, [&](const UserEntry& u) { return Quiet(u, now); });
  }
  if (a.users.size() >= kUsersPerAddress) {
    // The one that failed longest ago, preferring one that is not waiting.
    auto victim =
        std::min_element(a.users.begin(), a.users.end(), [&](const auto& x, const auto& y) {
          const bool xw = x.wait_until > now, yw = y.wait_until > now;
          return xw != yw ? !xw : x.last_failure < y.last_failure;
        });
    a.users.erase(victim);
  }
  a.users.push_back(UserEntry{user, 0, now, {}});
  return a.users.back();
}

void FailureLimiter::CountUserFailure(UserEntry& u, Clock::time_point now, Failure* out) {
  if (now - u.last_failure > policy_.window) u.failures = 0;
  u.last_failure = now;
  ++u.failures;
  out->failures = u.failures;
  if (u.failures <= policy_.user_failures) return;
  // failure_delay after the first failure past user_failures, doubled by each one after it.
  const int doublings = std::min(u.failures - policy_.user_failures - 1, 30);
  Clock::duration wait = policy_.failure_delay;
  for (int i = 0; i < doublings && wait < policy_.max_failure_delay; ++i) wait *= 2;
  wait = std::min(wait, policy_.max_failure_delay);
  u.wait_until = now + wait;
  out->user_wait_s = CeilSeconds(wait);
  const int64_t until = u.wait_until.time_since_epoch().count();
  int64_t latest = latest_user_wait_.load();
  while (latest < until && !latest_user_wait_.compare_exchange_weak(latest, until)) {
  }
}

int64_t FailureLimiter::Check(const std::string& address, std::string_view user, Scope scope,
                              Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(address);
  if (it == entries_.end()) return 0;
  AddressEntry& a = it->second;
  const size_t hash = std::hash<std::string_view>()(user);
  for (const auto& u : a.users) {
    if (u.user == hash && u.wait_until > now) return CeilSeconds(u.wait_until - now);
  }
  if (scope == Scope::kUser) return 0;
  const auto wait = BudgetWait(a, now);
  if (wait == Clock::duration::zero()) return 0;
  Failure ignored;
  CountUserFailure(UserOf(a, hash, now), now, &ignored);
  return CeilSeconds(wait);
}

FailureLimiter::Failure FailureLimiter::RecordFailure(const std::string& address,
                                                      std::string_view user,
                                                      Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  AddressEntry& a = AddressOf(address, now);
  Failure out;
  CountUserFailure(UserOf(a, std::hash<std::string_view>()(user), now), now, &out);
  const bool was_spent = BudgetWait(a, now) > Clock::duration::zero();
  a.budget_at = std::max(a.budget_at, now) + budget_step_;
  out.address_spent = !was_spent && BudgetWait(a, now) > Clock::duration::zero();
  return out;
}

void FailureLimiter::RecordSuccess(const std::string& address, std::string_view user) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(address);
  if (it == entries_.end()) return;
  const size_t hash = std::hash<std::string_view>()(user);
  std::erase_if(it->second.users, [hash](const UserEntry& u) { return u.user == hash; });
}

size_t FailureLimiter::tracked() {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

// SHA-256, fetched once; each thread keeps its own context.
struct Authenticator::Digest {
  EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  ~Digest() { EVP_MD_free(md); }
};

size_t Authenticator::FingerprintHash::operator()(const Fingerprint& f) const {
  size_t h;
  std::memcpy(&h, f.data(), sizeof h);
  return h;
}

namespace {

FailureLimiter::Policy PolicyOf(const AuthOptions& o) {
  FailureLimiter::Policy p;
  p.user_failures = o.user_failures;
  p.failure_delay = o.failure_delay;
  p.max_failure_delay = o.max_failure_delay;
  p.window = o.failure_window;
  p.address_failures = o.address_failures;
  p.max_tracked_addresses = o.max_tracked_addresses;
  return p;
}

Clock::time_point SteadyNow() { return Clock::now(); }

// The user name in decoded Basic credentials ("user:password"); all of it without a colon.
std::string_view UserPart(std::string_view decoded) { return decoded.substr(0, decoded.find(':')); }

}  // namespace

Authenticator::Authenticator(AuthOptions options, cache::Metrics* metrics, Now now)
    : options_(std::move(options)),
      metrics_(metrics),
      now_(now ? now : &SteadyNow),
      known_good_for_(std::max<Clock::duration>(kKnownGoodFor, options_.verified_ttl)),
      challenge_("Basic realm=\"" + options_.realm + "\""),
      digest_(std::make_unique<Digest>()),
      limiter_(PolicyOf(options_)) {}

Authenticator::~Authenticator() = default;

Result<std::shared_ptr<Authenticator>> Authenticator::Create(AuthOptions options,
                                                             cache::Metrics* metrics, Now now) {
  RC_RETURN_IF_ERROR(ValidateAuthOptions(options));
  RC_ASSIGN_OR_RETURN(auto users, Htpasswd::Load(options.htpasswd));
  std::shared_ptr<Authenticator> a(new Authenticator(std::move(options), metrics, now));
  if (!a->digest_->md) return Internal("OpenSSL has no SHA-256");
  if (RAND_bytes(a->salt_.data(), static_cast<int>(a->salt_.size())) != 1) {
    return Internal("no random bytes for the credential cache");
  }
  a->users_ = std::move(users);
  return a;
}

Status Authenticator::Reload() {
  RC_ASSIGN_OR_RETURN(auto users, Htpasswd::Load(options_.htpasswd));
  SetUsers(std::move(users));
  return Status::Ok();
}

void Authenticator::SetUsers(std::shared_ptr<const Htpasswd> users) {
  const size_t n = users->size();
  bool same;
  {
    std::unique_lock<std::shared_mutex> lock(verified_mu_);
    // A reload for something else (a certificate, an upstream) reads the same file again: what
    // verified against it still holds, known-good credentials included.
    same = users_ && users_->SameEntries(*users);
    users_ = std::move(users);
    if (!same) {
      verified_.clear();
      ++generation_;
    }
  }
  spdlog::info("auth: {} user(s) now{}", n, same ? " (unchanged)" : "");
}

size_t Authenticator::users() const {
  std::shared_lock<std::shared_mutex> lock(verified_mu_);
  return users_->size();
}

bool Authenticator::Required(std::string_view path) const {
  for (const auto& p : options_.anonymous) {
    if (path == p) return false;
  }
  return true;
}

Authenticator::Fingerprint Authenticator::FingerprintOf(std::string_view token) const {
  struct Ctx {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Ctx() { EVP_MD_CTX_free(ctx); }
  };
  thread_local Ctx t;
  Fingerprint out{};
  unsigned int len = 0;
  if (!t.ctx || EVP_DigestInit_ex(t.ctx, digest_->md, nullptr) != 1 ||
      EVP_DigestUpdate(t.ctx, salt_.data(), salt_.size()) != 1 ||
      EVP_DigestUpdate(t.ctx, token.data(), token.size()) != 1 ||
      EVP_DigestFinal_ex(t.ctx, out.data(), &len) != 1) {
    // Never matches a remembered fingerprint: the credential is simply verified again.
    out.fill(0);
  }
  return out;
}

std::optional<Clock::time_point> Authenticator::VerifiedAt(const Fingerprint& f) const {
  std::shared_lock<std::shared_mutex> lock(verified_mu_);
  auto it = verified_.find(f);
  if (it == verified_.end()) return std::nullopt;
  return it->second;
}

bool Authenticator::Cached(const Fingerprint& f, Clock::time_point now) const {
  auto at = VerifiedAt(f);
  return at && now - *at < options_.verified_ttl;
}

void Authenticator::Remember(const Fingerprint& f, uint64_t generation, Clock::time_point now) {
  std::unique_lock<std::shared_mutex> lock(verified_mu_);
  if (generation != generation_) return;  // verified against a user set since replaced
  if (verified_.size() >= options_.max_verified) {
    // Known-good ones past their day first, then those only known-good, then all.
    std::erase_if(verified_, [&](const auto& kv) { return now - kv.second >= known_good_for_; });
    if (verified_.size() >= options_.max_verified) {
      std::erase_if(verified_,
                    [&](const auto& kv) { return now - kv.second >= options_.verified_ttl; });
    }
    if (verified_.size() >= options_.max_verified) verified_.clear();
  }
  verified_[f] = now;
}

Status Authenticator::Throttled(int64_t seconds, const char* why) {
  if (metrics_) metrics_->Count("regcache_auth_throttled_total", "");
  return upstream::WithRetryAfter(Status(Code::kRateLimited, why), seconds);
}

bool Authenticator::Recognized(std::string_view authorization) const {
  const auto now = now_();
  if (limiter_.AnyUserWaits(now)) return false;
  std::string_view token = BasicToken(authorization);
  return !token.empty() && Cached(FingerprintOf(token), now);
}

Status Authenticator::Screen(std::string_view authorization, const std::string& peer,
                             Check* check) {
  *check = Check::kDone;
  const auto now = now_();
  std::string_view token = BasicToken(authorization);
  // Clients without credentials may still answer the challenge, with an empty user and password
  // (containers/image does): that is no login attempt, so no failure to count.
  if (token.empty() || (token.size() <= 4 && Base64Decode(token) == ":")) {
    return Status(Code::kUnauthenticated, "authentication required");
  }
  const Fingerprint f = FingerprintOf(token);
  const auto verified_at = VerifiedAt(f);
  const bool cached = verified_at && now - *verified_at < options_.verified_ttl;
  if (cached && !limiter_.AnyUserWaits(now)) return Status::Ok();
  auto decoded = Base64Decode(token);
  const std::string_view user = decoded ? UserPart(*decoded) : std::string_view();
  // Even a credential verified recently waits out its own user name's back-off from this
  // address: a guesser must not learn which of its guesses was right meanwhile.
  const int64_t wait = limiter_.Check(
      peer, user, cached ? FailureLimiter::Scope::kUser : FailureLimiter::Scope::kUserAndAddress,
      now);
  if (decoded) OPENSSL_cleanse(decoded->data(), decoded->size());
  if (wait > 0) return Throttled(wait, "too many failed logins; retry later");
  if (!cached) {
    *check =
        verified_at && now - *verified_at < known_good_for_ ? Check::kKnownGood : Check::kUnknown;
  }
  return Status::Ok();
}

Status Authenticator::Verify(std::string_view authorization, const std::string& peer) {
  auto now = now_();
  std::string_view token = BasicToken(authorization);
  const Fingerprint f = FingerprintOf(token);
  // Another request may have verified these credentials while this one waited for a worker.
  if (!token.empty() && Cached(f, now)) return Status::Ok();
  std::shared_ptr<const Htpasswd> users;
  uint64_t generation;
  {
    std::shared_lock<std::shared_mutex> lock(verified_mu_);
    users = users_;
    generation = generation_;
  }
  auto decoded = Base64Decode(token);
  std::string user;
  bool ok = false;
  bool too_long = false;
  size_t colon = decoded ? decoded->find(':') : std::string::npos;
  if (decoded) user = std::string(UserPart(*decoded));
  // Or started backing off while this one waited for a worker.
  if (int64_t wait = limiter_.Check(peer, user, FailureLimiter::Scope::kUserAndAddress, now)) {
    if (decoded) OPENSSL_cleanse(decoded->data(), decoded->size());
    return Throttled(wait, "too many failed logins; retry later");
  }
  if (colon != std::string::npos) {
    std::string_view password = std::string_view(*decoded).substr(colon + 1);
    too_long = password.size() > kBcryptMaxPasswordBytes;
    ok = users->Verify(user, password);
  }
  if (decoded) OPENSSL_cleanse(decoded->data(), decoded->size());
  now = now_();
  if (ok) {
    Remember(f, generation, now);
    limiter_.RecordSuccess(peer, user);
    spdlog::info("auth: user '{}' logged in from {}", Printable(user), peer);
    return Status::Ok();
  }
  if (metrics_) metrics_->Count("regcache_auth_failures_total", "");
  const FailureLimiter::Failure failure = limiter_.RecordFailure(peer, user, now);
  if (colon == std::string::npos) {
    spdlog::warn("auth: failed login from {}: malformed Basic credentials", peer);
  } else if (too_long) {
    spdlog::warn(
        "auth: failed login from {} as user '{}': the password is longer than {} bytes, which "
        "bcrypt cannot check; such passwords are refused (choose a shorter one)",
        peer, Printable(user), kBcryptMaxPasswordBytes);
  } else {
    spdlog::warn("auth: failed login from {} as user '{}'", peer, Printable(user));
  }
  if (failure.user_wait_s > 0) {
    spdlog::warn(
        "auth: {} failed logins in a row as user '{}' from {}: its next login as '{}' "
        "is refused with 429 for {} s (doubling with each failure, up to {} s)",
        failure.failures, Printable(user), peer, Printable(user), failure.user_wait_s,
        options_.max_failure_delay.count());
  }
  if (failure.address_spent) {
    spdlog::warn(
        "auth: {} failed logins from {} within {} s: its logins that need a password check are "
        "refused with 429 until its failures fall below that rate (credentials verified in the "
        "last {} s still pass)",
        options_.address_failures, peer, options_.failure_window.count(),
        options_.verified_ttl.count());
  }
  return Status(Code::kUnauthenticated, "invalid username or password");
}

}  // namespace regcache::http
