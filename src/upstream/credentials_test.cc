#include "upstream/credentials.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "base/strings.h"

namespace regcache::upstream {
namespace {

namespace fs = std::filesystem;

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

}  // namespace
}  // namespace regcache::upstream
