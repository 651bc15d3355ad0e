#include "upstream/credentials.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include "base/strings.h"

namespace regcache::upstream {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A well-behaved helper's answer.
constexpr char kAnswer[] = "echo '{\"Username\":\"u\",\"Secret\":\"s\"}'\n";

int CountOpenFds() {
  int n = 0;
  for ([[maybe_unused]] const auto& entry : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// The "state ppid" fields of /proc/<pid>/stat, or nullopt when the process is gone.
std::optional<std::pair<char, pid_t>> StateAndParent(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return std::nullopt;
  std::istringstream rest(stat.substr(stat.rfind(')') + 1));
  char state = 0;
  pid_t ppid = 0;
  rest >> state >> ppid;
  return std::make_pair(state, ppid);
}

// Children of this process, live or zombie: a child we did not reap shows up here.
int CountChildren() {
  int n = 0;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    if (auto s = StateAndParent(name); s && s->second == getpid()) ++n;
  }
  return n;
}

// Whether `pid` still runs (a zombie whose parent is not us does not count), waiting up to 1 s
// for a SIGKILL to land.
bool StillRunning(const std::string& pid) {
  for (auto give_up = Clock::now() + 1s; Clock::now() < give_up;
       std::this_thread::sleep_for(10ms)) {
    auto s = StateAndParent(pid);
    if (!s || s->first == 'Z' || s->first == 'X') return false;
  }
  return true;
}

class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regcache-creds-XXXXXX";
    dir_ = mkdtemp(tmpl);
    old_path_ = std::getenv("PATH") ? std::getenv("PATH") : "";
    setenv("PATH", (dir_ + ":" + old_path_).c_str(), 1);
  }
  void TearDown() override {
    setenv("PATH", old_path_.c_str(), 1);
    fs::remove_all(dir_);
  }
  void WriteConfig(const std::string& json) { std::ofstream(dir_ + "/config.json") << json; }
  // A real credential helper: a script that logs what it was asked and answers like
  // docker-credential-ecr-login does.
  void WriteHelper(const std::string& name, const std::string& body) {
    std::string path = dir_ + "/docker-credential-" + name;
    std::ofstream(path) << "#!/bin/sh\n" << body;
    chmod(path.c_str(), 0755);
  }
  // A helper that notes each run in `runs` before answering.
  void WriteCountingHelper(const std::string& name, const std::string& before_answer = "") {
    WriteHelper(name, "read url; echo run >> " + dir_ + "/runs; " + before_answer + kAnswer);
  }
  int Runs() {
    std::ifstream in(dir_ + "/runs");
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  }
  // config.json with the counting helper for h.io and a static auths entry for a.io.
  void WriteConfigWithAuthsUser(const std::string& user) {
    WriteConfig(R"({"credHelpers":{"h.io":"count"},"auths":{"a.io":{"username":")" + user +
                R"(","password":"p"}}})");
  }
  std::string dir_;
  std::string old_path_;
};

TEST_F(CredentialsTest, AuthsEntryByAnyKeySpelling) {
  WriteConfig(R"({"auths":{
      "https://index.docker.io/v1/":{"auth":")" +
              Base64Encode("hubuser:hubpass") + R"("},
      "http://localhost:5000/v2/":{"username":"u","password":"p"}}})");
  CredentialResolver r(dir_);
  auto hub = r.Resolve("docker.io");
  ASSERT_TRUE(hub.ok());
  EXPECT_EQ(hub->username, "hubuser");
  EXPECT_EQ(hub->password, "hubpass");
  auto local = r.Resolve("localhost:5000");
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(local->username, "u");
  auto none = r.Resolve("ghcr.io");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(CredentialsTest, HelpersInDockerOrder) {
  WriteHelper(
      "ecr-login",
      "read url; echo \"$url\" > " + dir_ +
          "/asked; "
          "echo '{\"ServerURL\":\"'$url'\",\"Username\":\"AWS\",\"Secret\":\"ecrpass\"}'\n");
  WriteHelper("store", "read url; echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}'\n");
  WriteConfig(R"({"credsStore":"store",
      "credHelpers":{"123.dkr.ecr.us-east-1.amazonaws.com":"ecr-login"},
      "auths":{"123.dkr.ecr.us-east-1.amazonaws.com":{"auth":")" +
              Base64Encode("x:y") + R"("}}})");
  CredentialResolver r(dir_);
  auto ecr = r.Resolve("123.dkr.ecr.us-east-1.amazonaws.com");
  ASSERT_TRUE(ecr.ok()) << ecr.status().ToString();
  EXPECT_EQ(ecr->username, "AWS");
  EXPECT_EQ(ecr->password, "ecrpass");
  std::ifstream asked(dir_ + "/asked");
  std::string url;
  std::getline(asked, url);
  EXPECT_EQ(url, "123.dkr.ecr.us-east-1.amazonaws.com");
  // credsStore serves every other host; "<token>" means an identity token.
  auto hub = r.Resolve("docker.io");
  ASSERT_TRUE(hub.ok());
  EXPECT_EQ(hub->identity_token, "refresh");
  EXPECT_TRUE(hub->username.empty());
}

TEST_F(CredentialsTest, ExplicitWinsAndHelperFailuresAreClear) {
  WriteHelper("broken", "echo 'keychain locked' >&2; exit 1\n");
  WriteHelper("empty", "echo 'credentials not found in native keychain'; exit 1\n");
  WriteConfig(R"({"credHelpers":{"a.io":"broken","b.io":"empty","c.io":"missing"}})");
  CredentialResolver r(dir_);
  auto a = r.Resolve("a.io");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), Code::kUnauthenticated);
  EXPECT_NE(a.status().message().find("keychain locked"), std::string::npos);
  auto b = r.Resolve("b.io");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->empty());
  auto c = r.Resolve("c.io");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("not installed"), std::string::npos);
  r.SetExplicit("a.io", Credentials{"flag", "pw", ""});
  EXPECT_EQ(r.Resolve("a.io")->username, "flag");
}

TEST_F(CredentialsTest, BrokenConfigIsAnError) {
  WriteConfig("{not json");
  CredentialResolver r(dir_);
  EXPECT_EQ(r.Resolve("x.io").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(DockerConfigServerKey("docker.io"), "https://index.docker.io/v1/");
}

TEST_F(CredentialsTest, CachedResultsExpireAfterTtl) {
  WriteCountingHelper("count");
  WriteConfigWithAuthsUser("old");
  CredentialResolver r(dir_, {.ttl = 1s});
  r.SetExplicit("x.io", Credentials{"flag", "pw", ""});
  ASSERT_TRUE(r.Resolve("h.io").ok());
  ASSERT_TRUE(r.Resolve("h.io").ok());
  EXPECT_EQ(Runs(), 1);
  EXPECT_EQ(r.Resolve("a.io")->username, "old");
  WriteConfigWithAuthsUser("new");
  EXPECT_EQ(r.Resolve("a.io")->username, "old");  // still within the TTL

  std::this_thread::sleep_for(1100ms);
  auto h = r.Resolve("h.io");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->username, "u");
  EXPECT_EQ(Runs(), 2);
  EXPECT_EQ(r.Resolve("a.io")->username, "new");
  EXPECT_EQ(r.Resolve("x.io")->username, "flag");  // explicit credentials never expire
}

TEST_F(CredentialsTest, InvalidateRunsTheSourceAgain) {
  WriteCountingHelper("count");
  WriteConfigWithAuthsUser("old");
  CredentialResolver r(dir_);  // default TTL: nothing expires during the test
  r.SetExplicit("x.io", Credentials{"flag", "pw", ""});
  ASSERT_TRUE(r.Resolve("h.io").ok());
  ASSERT_TRUE(r.Resolve("h.io").ok());
  EXPECT_EQ(Runs(), 1);
  r.Invalidate("a.io");  // another registry's entry
  ASSERT_TRUE(r.Resolve("h.io").ok());
  EXPECT_EQ(Runs(), 1);
  r.Invalidate("h.io");
  ASSERT_TRUE(r.Resolve("h.io").ok());
  EXPECT_EQ(Runs(), 2);

  EXPECT_EQ(r.Resolve("a.io")->username, "old");
  WriteConfigWithAuthsUser("new");
  EXPECT_EQ(r.Resolve("a.io")->username, "old");
  r.Invalidate("a.io");
  EXPECT_EQ(r.Resolve("a.io")->username, "new");

  r.Invalidate("x.io");
  EXPECT_EQ(r.Resolve("x.io")->username, "flag");
}

TEST_F(CredentialsTest, HungHelperTimesOutAndIsKilledWithWhatItStarted) {
  // The shell waits on a background sleep, so killing only the shell would leave the sleep.
  WriteHelper("hang", "read url; sleep 30 & echo $! > " + dir_ + "/sleeper; wait\n");
  WriteConfig(R"({"credHelpers":{"slow.io":"hang"}})");
  CredentialResolver r(dir_, {.helper_timeout = 1s});
  const auto start = Clock::now();
  auto c = r.Resolve("slow.io");
  const auto elapsed = Clock::now() - start;
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kUnavailable);
  EXPECT_EQ(c.status().message(), "credential helper docker-credential-hang timed out after 1 s");
  EXPECT_GE(elapsed, 1s);
  EXPECT_LT(elapsed, 1500ms);
  EXPECT_EQ(CountChildren(), 0);
  std::string sleeper;
  std::getline(std::ifstream(dir_ + "/sleeper"), sleeper);
  ASSERT_FALSE(sleeper.empty());
  EXPECT_FALSE(StillRunning(sleeper));
}

TEST_F(CredentialsTest, MissingHelperIsNotInstalledWhetherSpawnOrShellSaysSo) {
  // Not on PATH: posix_spawnp fails with ENOENT.
  auto missing = RunCredentialHelper("absent", "x.io");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kUnauthenticated);
  EXPECT_EQ(missing.status().message(),
            "credential helper docker-credential-absent is not installed");
  // A wrapper whose program is missing: the child exits 127.
  WriteHelper("wrapper", "exec docker-credential-absent get\n");
  auto wrapped = RunCredentialHelper("wrapper", "x.io");
  ASSERT_FALSE(wrapped.ok());
  EXPECT_EQ(wrapped.status().code(), Code::kUnauthenticated);
  EXPECT_EQ(wrapped.status().message(),
            "credential helper docker-credential-wrapper is not installed");
}

TEST_F(CredentialsTest, HelperThatClosesStdinCannotKillUsWithSigpipe) {
  WriteHelper("deaf", std::string("exec 0<&-; sleep 0.2; ") + kAnswer);
  // Far more than a pipe holds, so some write certainly meets the closed pipe.
  auto c = RunCredentialHelper("deaf", std::string(1 << 20, 'x'));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->username, "u");
}

TEST_F(CredentialsTest, NoFdOrChildLeftOnAnyPath) {
  WriteHelper("ok", std::string("read url; ") + kAnswer);
  WriteHelper("fail", "echo boom; exit 1\n");
  WriteHelper("deaf", std::string("exec 0<&-; ") + kAnswer);
  WriteHelper("hang", "sleep 30\n");
  const int fds_before = CountOpenFds();
  for (int i = 0; i < 20; ++i) {
    EXPECT_TRUE(RunCredentialHelper("ok", "x.io").ok());
    EXPECT_NE(RunCredentialHelper("absent", "x.io").status().message().find("not installed"),
              std::string::npos);
    EXPECT_NE(RunCredentialHelper("fail", "x.io").status().message().find("boom"),
              std::string::npos);
    EXPECT_TRUE(RunCredentialHelper("deaf", std::string(100000, 'x')).ok());
    EXPECT_EQ(RunCredentialHelper("hang", "x.io", 50ms).status().code(), Code::kUnavailable);
  }
  EXPECT_EQ(CountOpenFds(), fds_before);
  EXPECT_EQ(CountChildren(), 0);
}

TEST_F(CredentialsTest, ConcurrentResolvesShareOneHelperRunAndOthersGoOn) {
  WriteCountingHelper("count", "sleep 2; ");
  WriteConfigWithAuthsUser("static");
  CredentialResolver r(dir_);
  std::vector<std::thread> threads;
  std::vector<Result<Credentials>> results(8, Status(Code::kInternal, "not run"));
  for (auto& result : results) {
    threads.emplace_back([&r, &result] { result = r.Resolve("h.io"); });
  }
  for (auto give_up = Clock::now() + 5s; Runs() == 0 && Clock::now() < give_up;) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(Runs(), 1);  // the helper is running now
  const auto start = Clock::now();
  auto other = r.Resolve("a.io");
  const auto other_took = Clock::now() - start;
  for (auto& t : threads) t.join();  // before any ASSERT can return
  EXPECT_LT(other_took, 200ms);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->username, "static");
  for (const auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status().ToString();
    EXPECT_EQ(result->username, "u");
  }
  EXPECT_EQ(Runs(), 1);
}

}  // namespace
}  // namespace regcache::upstream
