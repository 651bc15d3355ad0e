#include "upstream/credentials.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/strings.h"
#include "oci/reference.h"

namespace regcache::upstream {
namespace {

// Runs argv with `input` on stdin; captures stdout and stderr (bounded). Exit status in *exit_code.
Status RunProcess(const std::string& program, const std::string& arg, const std::string& input,
                  std::string* out, int* exit_code) {
  int in_pipe[2], out_pipe[2];
  if (pipe2(in_pipe, O_CLOEXEC) != 0) return IoError("pipe failed");
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    close(in_pipe[0]);
    close(in_pipe[1]);
    return IoError("pipe failed");
  }
  pid_t pid = fork();
  if (pid < 0) return IoError("fork failed");
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(out_pipe[1], 2);
    execlp(program.c_str(), program.c_str(), arg.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  (void)!write(in_pipe[1], input.data(), input.size());
  close(in_pipe[1]);
  char buf[4096];
  while (true) {
    ssize_t n = read(out_pipe[0], buf, sizeof(buf));
    if (n <= 0) break;
    if (out->size() < 1 << 20) out->append(buf, static_cast<size_t>(n));
  }
  close(out_pipe[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return Status::Ok();
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

Result<Credentials> RunCredentialHelper(const std::string& helper, const std::string& server_url) {
  std::string program = "docker-credential-" + helper;
  std::string out;
  int exit_code = 0;
  RC_RETURN_IF_ERROR(RunProcess(program, "get", server_url, &out, &exit_code));
  if (exit_code == 127) {
    return Status(Code::kUnauthenticated, "credential helper " + program + " is not installed");
  }
  if (exit_code != 0) {
    std::string msg(Trim(out));
    // Every helper says some form of "credentials not found": that means anonymous.
    if (ToLower(msg).find("not found") != std::string::npos) return Credentials{};
    return Status(Code::kUnauthenticated, program + " failed: " + msg.substr(0, 300));
  }
  auto doc = nlohmann::json::parse(out, nullptr, false);
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

CredentialResolver::CredentialResolver(std::string docker_config_dir) {
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

Result<Credentials> CredentialResolver::Resolve(const std::string& registry) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = explicit_.find(registry); it != explicit_.end()) return it->second;
  if (auto it = cache_.find(registry); it != cache_.end()) return it->second;
  auto c = ResolveUncached(registry);
  if (c.ok()) cache_[registry] = *c;
  return c;
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
        return RunCredentialHelper(value.get<std::string>(), server);
      }
    }
  }
  if (auto store = doc.find("credsStore");
      store != doc.end() && store->is_string() && !store->get<std::string>().empty()) {
    return RunCredentialHelper(store->get<std::string>(), server);
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
