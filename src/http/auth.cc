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
    if (cost == 0) cost = std::stoi(std::string(hash.substr(4, 2)));
    if (!h->hashes_.emplace(user, std::string(hash)).second) {
      return InvalidArgument(at + ": user '" + Printable(user) + "' appears twice");
    }
  }
  if (h->hashes_.empty()) {
    return InvalidArgument(where + ": no users (every request would be refused)");
  }
  // Unknown users are checked against this, at the cost of the file's first entry.
  char setting[CRYPT_GENSALT_OUTPUT_SIZE];
  auto data = std::make_unique<crypt_data>();
  if (!crypt_gensalt_rn("$2b$", static_cast<unsigned long>(cost), nullptr, 0, setting,
                        sizeof setting)) {
    return Internal("crypt_gensalt for bcrypt failed: " + std::string(std::strerror(errno)));
  }
  const char* dummy = crypt_rn("regcache", setting, data.get(), sizeof(crypt_data));
  if (!dummy || dummy[0] == '*') return Internal("this system's crypt library has no bcrypt");
  h->dummy_ = dummy;
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
  auto it = hashes_.find(std::string(user));
  bool match = BcryptMatches(password, it == hashes_.end() ? dummy_ : it->second);
  return match && it != hashes_.end();
}

FailureLimiter::FailureLimiter(int max_failures, Clock::duration window, Clock::duration lockout,
                               size_t max_tracked)
    : max_failures_(max_failures), window_(window), lockout_(lockout), max_tracked_(max_tracked) {}

int64_t FailureLimiter::LockedFor(const std::string& address, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(address);
  if (it == entries_.end() || it->second.locked_until <= now) return 0;
  return CeilSeconds(it->second.locked_until - now);
}

bool FailureLimiter::RecordFailure(const std::string& address, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(address);
  if (it == entries_.end()) {
    if (entries_.size() >= max_tracked_) {
      std::erase_if(entries_, [&](const auto& kv) {
        return kv.second.locked_until <= now && now - kv.second.window_start > window_;
      });
    }
    // Still full: memory stays bounded. An address that is not locked out loses its count
    // first; a flood from that many addresses defeats per-address counting anyway.
    if (entries_.size() >= max_tracked_) {
      auto victim = std::find_if(entries_.begin(), entries_.end(),
                                 [&](const auto& kv) { return kv.second.locked_until <= now; });
      entries_.erase(victim == entries_.end() ? entries_.begin() : victim);
    }
    it = entries_.emplace(address, Entry{0, now, {}}).first;
  }
  Entry& e = it->second;
  if (now - e.window_start > window_) {
    e.failures = 0;
    e.window_start = now;
  }
  if (++e.failures < max_failures_) return false;
  e.failures = 0;
  e.locked_until = now + lockout_;
  e.window_start = e.locked_until;
  const int64_t until = e.locked_until.time_since_epoch().count();
  int64_t latest = latest_unlock_.load();
  while (latest < until && !latest_unlock_.compare_exchange_weak(latest, until)) {
  }
  return true;
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

Authenticator::Authenticator(AuthOptions options, cache::Metrics* metrics)
    : options_(std::move(options)),
      metrics_(metrics),
      challenge_("Basic realm=\"" + options_.realm + "\""),
      digest_(std::make_unique<Digest>()),
      limiter_(options_.max_failures, options_.failure_window, options_.lockout,
               options_.max_tracked_addresses) {}

Authenticator::~Authenticator() = default;

Result<std::shared_ptr<Authenticator>> Authenticator::Create(AuthOptions options,
                                                             cache::Metrics* metrics) {
  RC_RETURN_IF_ERROR(ValidateAuthOptions(options));
  RC_ASSIGN_OR_RETURN(auto users, Htpasswd::Load(options.htpasswd));
  std::shared_ptr<Authenticator> a(new Authenticator(std::move(options), metrics));
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
  {
    std::unique_lock<std::shared_mutex> lock(verified_mu_);
    users_ = std::move(users);
    verified_.clear();
    ++generation_;
  }
  spdlog::info("auth: {} user(s) now", n);
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

bool Authenticator::Cached(const Fingerprint& f, Clock::time_point now) const {
  std::shared_lock<std::shared_mutex> lock(verified_mu_);
  auto it = verified_.find(f);
  return it != verified_.end() && it->second > now;
}

void Authenticator::Remember(const Fingerprint& f, uint64_t generation, Clock::time_point now) {
  std::unique_lock<std::shared_mutex> lock(verified_mu_);
  if (generation != generation_) return;  // verified against a user set since replaced
  if (verified_.size() >= options_.max_verified) {
    std::erase_if(verified_, [now](const auto& kv) { return kv.second <= now; });
    if (verified_.size() >= options_.max_verified) verified_.clear();
  }
  verified_[f] = now + options_.verified_ttl;
}

Status Authenticator::LockedOut(int64_t seconds) {
  if (metrics_) metrics_->Count("regcache_auth_throttled_total", "");
  return upstream::WithRetryAfter(
      Status(Code::kRateLimited, "too many failed logins from this address"), seconds);
}

bool Authenticator::Recognized(std::string_view authorization) const {
  const auto now = Clock::now();
  if (limiter_.AnyLocked(now)) return false;
  std::string_view token = BasicToken(authorization);
  return !token.empty() && Cached(FingerprintOf(token), now);
}

Status Authenticator::Screen(std::string_view authorization, const std::string& peer,
                             bool* verify) {
  *verify = false;
  const auto now = Clock::now();
  if (limiter_.AnyLocked(now)) {
    if (int64_t s = limiter_.LockedFor(peer, now)) return LockedOut(s);
  }
  std::string_view token = BasicToken(authorization);
  // Clients without credentials may still answer the challenge, with an empty user and password
  // (containers/image does): that is no login attempt, so no failure to count.
  if (token.empty() || (token.size() <= 4 && Base64Decode(token) == ":")) {
    return Status(Code::kUnauthenticated, "authentication required");
  }
  *verify = !Cached(FingerprintOf(token), now);
  return Status::Ok();
}

Status Authenticator::Verify(std::string_view authorization, const std::string& peer) {
  auto now = Clock::now();
  // Another request may have locked this address out, or verified these credentials, while
  // this one waited for a worker.
  if (int64_t s = limiter_.LockedFor(peer, now)) return LockedOut(s);
  std::string_view token = BasicToken(authorization);
  const Fingerprint f = FingerprintOf(token);
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
  size_t colon = decoded ? decoded->find(':') : std::string::npos;
  if (colon != std::string::npos) {
    user = decoded->substr(0, colon);
    ok = users->Verify(user, std::string_view(*decoded).substr(colon + 1));
  }
  if (decoded) OPENSSL_cleanse(decoded->data(), decoded->size());
  now = Clock::now();
  if (ok) {
    Remember(f, generation, now);
    spdlog::info("auth: user '{}' logged in from {}", Printable(user), peer);
    return Status::Ok();
  }
  if (metrics_) metrics_->Count("regcache_auth_failures_total", "");
  const bool locked = limiter_.RecordFailure(peer, now);
  if (colon == std::string::npos) {
    spdlog::warn("auth: failed login from {}: malformed Basic credentials", peer);
  } else {
    spdlog::warn("auth: failed login from {} as user '{}'", peer, Printable(user));
  }
  if (locked) {
    spdlog::warn(
        "auth: {} failed logins from {} within {} s: its requests are refused with 429 for {} s",
        options_.max_failures, peer, options_.failure_window.count(), options_.lockout.count());
  }
  return Status(Code::kUnauthenticated, "invalid username or password");
}

}  // namespace regcache::http
