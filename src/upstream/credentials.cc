#include "upstream/credentials.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>

#include "base/strings.h"
#include "oci/reference.h"

namespace regcache::upstream {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kMaxOutput = 1 << 20;  // per stream; a helper's answer is a few hundred bytes

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// Owns one file descriptor, so that no path out of RunProcess leaks one.
class Fd {
 public:
  Fd() = default;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset(int fd = -1) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A pipe whose ends are close-on-exec (the child gets its ends only through the dup2 file
// actions) and numbered 3 or more, so that a dup2 onto 0-2 in the child never overwrites another
// pipe end when the server runs with a standard stream closed.
Status MakePipe(Fd* read_end, Fd* write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return IoError("pipe failed: " + ErrnoText(errno));
  read_end->Reset(fds[0]);
  write_end->Reset(fds[1]);
  for (Fd* end : {read_end, write_end}) {
    if (end->get() >= 3) continue;
    int moved = fcntl(end->get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) return IoError("fcntl failed: " + ErrnoText(errno));
    end->Reset(moved);
  }
  return Status::Ok();
}

// posix_spawn's file actions and attributes, destroyed on every path.
class SpawnConfig {
 public:
  SpawnConfig()
      : actions_ok_(posix_spawn_file_actions_init(&actions_) == 0),
        attr_ok_(posix_spawnattr_init(&attr_) == 0) {}
  SpawnConfig(const SpawnConfig&) = delete;
  SpawnConfig& operator=(const SpawnConfig&) = delete;
  ~SpawnConfig() {
    if (actions_ok_) posix_spawn_file_actions_destroy(&actions_);
    if (attr_ok_) posix_spawnattr_destroy(&attr_);
  }
  // Child: stdin/stdout/stderr from the given fds, no blocked signals, default SIGPIPE (the
  // server ignores it, and that would be inherited), own process group so a timeout can kill
  // whatever the helper started too. Returns 0 or an errno.
  int Configure(int stdin_fd, int stdout_fd, int stderr_fd) {
    if (!actions_ok_ || !attr_ok_) return ENOMEM;
    sigset_t none, sigpipe;
    sigemptyset(&none);
    sigemptyset(&sigpipe);
    sigaddset(&sigpipe, SIGPIPE);
    for (int err :
         {posix_spawn_file_actions_adddup2(&actions_, stdin_fd, 0),
          posix_spawn_file_actions_adddup2(&actions_, stdout_fd, 1),
          posix_spawn_file_actions_adddup2(&actions_, stderr_fd, 2),
          posix_spawnattr_setsigmask(&attr_, &none),
          posix_spawnattr_setsigdefault(&attr_, &sigpipe), posix_spawnattr_setpgroup(&attr_, 0),
          posix_spawnattr_setflags(
              &attr_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP)}) {
      if (err != 0) return err;
    }
    return 0;
  }
  const posix_spawn_file_actions_t* actions() const { return &actions_; }
  const posix_spawnattr_t* attr() const { return &attr_; }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
  bool actions_ok_;
  bool attr_ok_;
};

// write() that cannot kill the process with SIGPIPE when the reader is gone: SIGPIPE is blocked
// for this thread during the call and one it raised is consumed before unblocking, so the caller
// sees EPIPE. Pipes have no MSG_NOSIGNAL, and the process-wide disposition is not ours to change.
ssize_t WriteWithoutSigpipe(int fd, const char* data, size_t size) {
  sigset_t sigpipe, old_mask, pending;
  sigemptyset(&sigpipe);
  sigaddset(&sigpipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &sigpipe, &old_mask);
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  ssize_t n = write(fd, data, size);
  const int write_errno = errno;
  if (n < 0 && write_errno == EPIPE && !was_pending) {
    const timespec no_wait{0, 0};
    while (sigtimedwait(&sigpipe, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = write_errno;
  return n;
}

int MillisUntil(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(left)>(left, 0, 1 << 30));
}

struct ProcessOutcome {
  int spawn_error = 0;  // errno from posix_spawnp; when set, nothing ran
  bool timed_out = false;
  int exit_code = 0;  // 128 + signal when killed by one
  std::string out;
  std::string err;
};

// Runs `program arg` (looked up on PATH) with `input` on stdin and captures stdout and stderr
// (each bounded). The whole run, including writing the input and reaping, is bounded by
// `timeout`; then the child's process group is killed and the child reaped. Fails only when
// the pipes cannot be made or poll breaks.
Result<ProcessOutcome> RunProcess(const std::string& program, const std::string& arg,
                                  const std::string& input, std::chrono::milliseconds timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  Fd in_r, in_w, out_r, out_w, err_r, err_w;
  RC_RETURN_IF_ERROR(MakePipe(&in_r, &in_w));
  RC_RETURN_IF_ERROR(MakePipe(&out_r, &out_w));
  RC_RETURN_IF_ERROR(MakePipe(&err_r, &err_w));

  ProcessOutcome outcome;
  pid_t pid = -1;
  {
    SpawnConfig config;
    char* const argv[] = {const_cast<char*>(program.c_str()), const_cast<char*>(arg.c_str()),
                          nullptr};
    outcome.spawn_error = config.Configure(in_r.get(), out_w.get(), err_w.get());
    if (outcome.spawn_error == 0) {
      outcome.spawn_error =
          posix_spawnp(&pid, program.c_str(), config.actions(), config.attr(), argv, environ);
    }
  }
  if (outcome.spawn_error != 0) return outcome;
  // Only the child may hold these, or we would never see EOF on its output.
  in_r.Reset();
  out_w.Reset();
  err_w.Reset();

  // Non-blocking so that a helper that never reads cannot stall us on a full pipe.
  if (input.empty() || fcntl(in_w.get(), F_SETFL, O_NONBLOCK) != 0) in_w.Reset();
  size_t written = 0;
  Fd* const outputs[] = {&out_r, &err_r};
  std::string* const sinks[] = {&outcome.out, &outcome.err};
  Status poll_status;
  while (in_w.get() >= 0 || out_r.get() >= 0 || err_r.get() >= 0) {
    pollfd fds[3] = {{in_w.get(), POLLOUT, 0}, {out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    const int wait_ms = MillisUntil(deadline);
    if (wait_ms == 0) {
      outcome.timed_out = true;
      break;
    }
    // poll skips negative fds, so closed streams simply drop out.
    if (poll(fds, 3, wait_ms) < 0) {
      if (errno == EINTR) continue;
      poll_status = IoError("poll failed: " + ErrnoText(errno));
      break;
    }
    if (fds[0].revents != 0) {
      ssize_t n = WriteWithoutSigpipe(in_w.get(), input.data() + written, input.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      // EPIPE and the like: the helper does not want (the rest of) its input; not our error.
      if (written == input.size() || (n < 0 && errno != EAGAIN && errno != EINTR)) in_w.Reset();
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i + 1].revents == 0) continue;
      char buf[4096];
      ssize_t n = read(outputs[i]->get(), buf, sizeof(buf));
      if (n > 0) {
        size_t keep = std::min(static_cast<size_t>(n), kMaxOutput - sinks[i]->size());
        sinks[i]->append(buf, keep);  // the rest is drained and dropped so the child never blocks
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        outputs[i]->Reset();
      }
    }
  }

  // Its output is closed; it normally exits right away, but the deadline still applies.
  int status = 0;
  auto nap = std::chrono::microseconds(200);
  while (!outcome.timed_out && poll_status.ok()) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) return Internal("lost the exit status of " + program);
    if (Clock::now() >= deadline) {
      outcome.timed_out = true;
      break;
    }
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(10));
  }
  if (outcome.timed_out || !poll_status.ok()) {
    kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    RC_RETURN_IF_ERROR(poll_status);
    return outcome;
  }
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return outcome;
}

// "10", "1", "0.05": a timeout in seconds for messages.
std::string SecondsText(std::chrono::milliseconds d) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

Credentials FromAuthField(const nlohmann::json& entry) {
  Credentials c;
  if (auto it = entry.find("auth"); it != entry.end() && it->is_string()) {
    if (auto decoded = Base64Decode(it->get<std::string>())) {
      if (auto up = ParseUserPass(*decoded); up.ok()) c = *up;
    }
  }
  if (auto it = entry.find("username"); it != entry.end() && it->is_string() && c.username.empty())
    c.username = it->get<std::string>();
  if (auto it = entry.find("password"); it != entry.end() && it->is_string() && c.password.empty())
    c.password = it->get<std::string>();
  if (auto it = entry.find("identitytoken"); it != entry.end() && it->is_string())
    c.identity_token = it->get<std::string>();
  return c;
}

}  // namespace

std::string DockerConfigServerKey(const std::string& registry) {
  if (registry == oci::kDockerHub) return "https://index.docker.io/v1/";
  return registry;
}

Result<Credentials> RunCredentialHelper(const std::string& helper, const std::string& server_url,
                                        std::chrono::milliseconds timeout) {
  const std::string program = "docker-credential-" + helper;
  RC_ASSIGN_OR_RETURN(ProcessOutcome run, RunProcess(program, "get", server_url, timeout));
  // posix_spawnp reports a program missing from PATH as ENOENT; 127 is the shell's (and a
  // wrapper script's) way of saying the same.
  if (run.spawn_error == ENOENT || (run.spawn_error == 0 && run.exit_code == 127)) {
    return Status(Code::kUnauthenticated, "credential helper " + program + " is not installed");
  }
  if (run.spawn_error != 0) {
    return Unavailable("could not start credential helper " + program + ": " +
                       ErrnoText(run.spawn_error));
  }
  if (run.timed_out) {
    return Unavailable("credential helper " + program + " timed out after " + SecondsText(timeout) +
                       " s");
  }
  if (run.exit_code != 0) {
    // Helpers print their error on stdout (docker reads it from there), some on stderr.
    std::string msg(Trim(run.out));
    if (std::string_view err = Trim(run.err); !err.empty()) {
      msg += (msg.empty() ? "" : "; ") + std::string(err);
    }
    // Every helper says some form of "credentials not found": that means anonymous.
    if (ToLower(msg).find("not found") != std::string::npos) return Credentials{};
    return Status(Code::kUnauthenticated, program + " failed: " + msg.substr(0, 300));
  }
  // stdout only: a warning on stderr must not spoil the JSON.
  auto doc = nlohmann::json::parse(run.out, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Status(Code::kUnauthenticated, program + " printed something that is not JSON");
  }
  Credentials c;
  if (auto it = doc.find("Username"); it != doc.end() && it->is_string()) c.username = *it;
  std::string secret;
  if (auto it = doc.find("Secret"); it != doc.end() && it->is_string()) secret = *it;
  if (c.username == "<token>") {
    c.username.clear();
    c.identity_token = secret;
  } else {
    c.password = secret;
  }
  return c;
}

CredentialResolver::CredentialResolver(std::string docker_config_dir,
                                       CredentialResolverOptions options)
    : options_(options) {
  if (docker_config_dir.empty()) {
    if (const char* env = std::getenv("DOCKER_CONFIG"); env && *env) {
      docker_config_dir = env;
    } else if (const char* home = std::getenv("HOME"); home && *home) {
      docker_config_dir = std::string(home) + "/.docker";
    }
  }
  if (!docker_config_dir.empty()) config_path_ = docker_config_dir + "/config.json";
}

void CredentialResolver::SetExplicit(const std::string& registry, Credentials credentials) {
  std::lock_guard<std::mutex> lock(mu_);
  explicit_[registry] = std::move(credentials);
}

void CredentialResolver::Invalidate(const std::string& registry) {
  std::lock_guard<std::mutex> lock(mu_);
  cache_.erase(registry);
}

Result<Credentials> CredentialResolver::Resolve(const std::string& registry) {
  std::unique_lock<std::mutex> lock(mu_);
  if (auto it = explicit_.find(registry); it != explicit_.end()) return it->second;
  const Clock::time_point started = Clock::now();
  if (auto it = cache_.find(registry); it != cache_.end() && started < it->second.expires_at) {
    return it->second.credentials;
  }
  if (auto it = flights_.find(registry); it != flights_.end()) {
    std::shared_ptr<Flight> flight = it->second;
    // The run we join is bounded by the helper timeout; the grace covers reading config.json
    // and reaping. Waiting releases mu_, so other registries go on meanwhile.
    const Clock::time_point give_up = started + options_.helper_timeout + std::chrono::seconds(1);
    if (!flight_done_.wait_until(lock, give_up, [&] { return flight->done; })) {
      return Unavailable("timed out waiting for the credentials of " + registry);
    }
    return flight->result;
  }
  auto flight = std::make_shared<Flight>();
  flights_[registry] = flight;
  lock.unlock();
  Result<Credentials> result = ResolveUncached(registry);
  lock.lock();
  if (result.ok()) cache_[registry] = Cached{*result, started + options_.ttl};
  flight->result = result;
  flight->done = true;
  flights_.erase(registry);
  flight_done_.notify_all();
  return result;
}

Result<Credentials> CredentialResolver::ResolveUncached(const std::string& registry) {
  if (config_path_.empty()) return Credentials{};
  std::ifstream in(config_path_);
  if (!in) return Credentials{};  // no docker config: anonymous
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = nlohmann::json::parse(ss.str(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument(config_path_ + " is not valid JSON");
  }
  const std::string server = DockerConfigServerKey(registry);
  if (auto helpers = doc.find("credHelpers"); helpers != doc.end() && helpers->is_object()) {
    for (const auto& [key, value] : helpers->items()) {
      if (oci::NormalizeRegistryHost(key) == registry && value.is_string()) {
        return RunCredentialHelper(value.get<std::string>(), server, options_.helper_timeout);
      }
    }
  }
  if (auto store = doc.find("credsStore");
      store != doc.end() && store->is_string() && !store->get<std::string>().empty()) {
    return RunCredentialHelper(store->get<std::string>(), server, options_.helper_timeout);
  }
  if (auto auths = doc.find("auths"); auths != doc.end() && auths->is_object()) {
    for (const auto& [key, value] : auths->items()) {
      if (oci::NormalizeRegistryHost(key) == registry && value.is_object()) {
        return FromAuthField(value);
      }
    }
  }
  return Credentials{};
}

}  // namespace regcache::upstream
