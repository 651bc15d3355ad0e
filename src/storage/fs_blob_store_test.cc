#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "storage/fs_blob_store_impl.h"

namespace regcache::storage {
namespace {

namespace fs = std::filesystem;

class FsBlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regcache-store-XXXXXX";
    root_ = mkdtemp(tmpl);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

TEST_F(FsBlobStoreTest, IngestIsInvisibleUntilCommit) {
  auto store = OpenFilesystemBlobStore(root_);
  ASSERT_TRUE(store.ok());
  const std::string data = "hello blob";
  auto d = oci::Digest::Of(data);
  auto w = (*store)->Ingest(d);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Write(data.data(), 5).ok());
  EXPECT_FALSE((*store)->Stat(d)->has_value());
  EXPECT_TRUE(fs::exists((*w)->temp_path()));
  ASSERT_TRUE((*w)->Write(data.data() + 5, data.size() - 5).ok());
  ASSERT_TRUE((*w)->Commit(data.size()).ok());
  EXPECT_EQ((*store)->Stat(d)->value(), data.size());
  EXPECT_EQ((*store)->ReadAll(d, 100).value(), data);
  int fd = (*store)->Open(d).value();
  close(fd);
}

TEST_F(FsBlobStoreTest, AbortAndWrongSizeLeaveNothing) {
  auto store = OpenFilesystemBlobStore(root_).value();
  auto d = oci::Digest::Of("x");
  std::string temp;
  {
    auto w = store->Ingest(d).value();
    ASSERT_TRUE(w->Write("x", 1).ok());
    temp = w->temp_path();
  }  // destroyed without commit
  EXPECT_FALSE(fs::exists(temp));
  auto w = store->Ingest(d).value();
  ASSERT_TRUE(w->Write("xy", 2).ok());
  EXPECT_EQ(w->Commit(1).code(), Code::kIntegrity);
  EXPECT_FALSE(store->Stat(d)->has_value());
  EXPECT_EQ(store->Open(d).status().code(), Code::kNotFound);
}

TEST_F(FsBlobStoreTest, StartupRemovesCrashLeftovers) {
  fs::create_directories(root_ + "/tmp");
  std::ofstream(root_ + "/tmp/partial.123") << "half a blob";
  auto store = OpenFilesystemBlobStore(root_);
  ASSERT_TRUE(store.ok());
  EXPECT_TRUE(fs::is_empty(root_ + "/tmp"));
}

}  // namespace
}  // namespace regcache::storage
