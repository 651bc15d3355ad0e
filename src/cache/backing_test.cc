#include "cache/backing.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "metadata/metadata_store.h"
#include "storage/blob_store.h"
#include "testing/fake_registry.h"

namespace regcache::cache {
namespace {

using regcache::testing::FakeRegistry;
using regcache::testing::Op;

constexpr char kTarget[] = "cache/docker.io/library/app";

// A backing tier over a FakeRegistry, with a real blob store and metadata store in a temp dir.
class BackingTest : public ::testing::Test {
 protected:
  void Open(FakeRegistry::Options registry_options) {
    char tmpl[] = "/tmp/regcache-backing-XXXXXX";
    dir_ = mkdtemp(tmpl);
    blobs_ = storage::OpenFilesystemBlobStore(dir_).value();
    meta_ = metadata::OpenSqliteMetadataStore(dir_ + "/meta.db").value();
    registry_ = std::make_unique<FakeRegistry>("backing.example", registry_options);
    BackingOptions options;
    options.prefix = "cache";
    options.threads = 1;
    options.retry_min = std::chrono::milliseconds(1);
    options.retry_max = std::chrono::milliseconds(5);
    backing_ = std::make_unique<Backing>(registry_->NewClient(), registry_->NewClient(), options,
                                         *meta_, *blobs_, metrics_);
  }
  void TearDown() override {
    if (backing_) backing_->Shutdown();
    backing_.reset();
    std::filesystem::remove_all(dir_);
  }

  // The layer stored here, verified; the backing registry holds it with one byte flipped.
  oci::Digest CorruptCopyInTheBacking() {
    std::string good(200000, 'x');
    for (size_t i = 0; i < good.size(); ++i) good[i] = static_cast<char>(i * 7);
    const oci::Digest digest = oci::Digest::Of(good);
    EXPECT_TRUE(blobs_->PutSmall(digest, good).ok());
    std::string bad = good;
    bad[bad.size() / 2] ^= 0x01;
    registry_->PutBlobData(kTarget, digest, bad);
    good_ = good;
    return digest;
  }

  Status Read(const oci::Digest& digest) {
    return backing_->FetchBlob(
        kTarget, digest, [](uint64_t) { return Status::Ok(); },
        [](const char*, size_t) { return Status::Ok(); });
  }

  // Starts the copy threads, queues the write-back of `digest` and waits for the queue to empty.
  void WriteBack(const oci::Digest& digest) {
    ASSERT_TRUE(backing_->Start().ok());
    backing_->Put({metadata::ContentKind::kBlob, kTarget, digest, ""});
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (backing_->queued() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(backing_->queued(), 0u);
  }

  uint64_t Repairs(const char* result) {
    return metrics_.Get("regcache_backing_repairs_total", std::string("result=\"") + result + "\"");
  }

  std::string dir_;
  std::string good_;
  std::unique_ptr<storage::BlobStore> blobs_;
  std::unique_ptr<metadata::MetadataStore> meta_;
  std::unique_ptr<FakeRegistry> registry_;
  std::unique_ptr<Backing> backing_;
  Metrics metrics_;
};

TEST_F(BackingTest, ACorruptCopyIsCountedBlamedAndDistrusted) {
  Open({});
  const oci::Digest digest = CorruptCopyInTheBacking();
  EXPECT_FALSE(backing_->Distrusted(digest));
  Status s = Read(digest);
  EXPECT_EQ(s.code(), Code::kIntegrity);
  EXPECT_EQ(s.origin(), Origin::kBacking);
  EXPECT_NE(s.message().find("backing registry backing.example"), std::string::npos) << s.message();
  EXPECT_TRUE(backing_->Distrusted(digest));
  EXPECT_EQ(metrics_.Get("regcache_backing_requests_total", "kind=\"blob\",result=\"corrupt\""),
            1u);
}

TEST_F(BackingTest, AFailureBeforeTheFirstByteIsNotBlamedOnTheCopy) {
  Open({});
  const oci::Digest digest = CorruptCopyInTheBacking();
  registry_->FailNext(Op::kGetBlob, Unavailable("connection refused"));
  Status s = Read(digest);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_EQ(s.origin(), Origin::kBacking);
  EXPECT_FALSE(backing_->Distrusted(digest));
  // Not there at all: "ask the upstream", nothing distrusted.
  EXPECT_EQ(Read(oci::Digest::Of("absent")).code(), Code::kNotFound);
}

TEST_F(BackingTest, WriteBackReplacesTheCorruptCopyWhereDeletesRemoveData) {
  Open({.delete_removes_data = true});
  const oci::Digest digest = CorruptCopyInTheBacking();
  ASSERT_FALSE(Read(digest).ok());
  WriteBack(digest);
  EXPECT_EQ(registry_->BlobData(digest), good_);
  EXPECT_TRUE(registry_->Links(kTarget, digest));
  EXPECT_EQ(registry_->Calls(Op::kDeleteBlob), 1);
  EXPECT_EQ(Repairs("replaced"), 1u);
  EXPECT_FALSE(backing_->Distrusted(digest));
  EXPECT_TRUE(Read(digest).ok());
}

TEST_F(BackingTest, ARegistryThatKeepsItsDataLeavesTheDigestDistrusted) {
  Open({.delete_removes_data = false});  // distribution
  const oci::Digest digest = CorruptCopyInTheBacking();
  ASSERT_FALSE(Read(digest).ok());
  WriteBack(digest);
  EXPECT_NE(registry_->BlobData(digest), good_);
  EXPECT_EQ(Repairs("kept"), 1u);
  EXPECT_TRUE(backing_->Distrusted(digest));
}

TEST_F(BackingTest, ARefusedDeleteUploadsNothingAndKeepsTheDigestDistrusted) {
  Open({.deletes_enabled = false});
  const oci::Digest digest = CorruptCopyInTheBacking();
  ASSERT_FALSE(Read(digest).ok());
  WriteBack(digest);
  EXPECT_EQ(Repairs("refused"), 1u);
  EXPECT_EQ(registry_->Calls(Op::kCompleteUpload), 0);
  EXPECT_TRUE(backing_->Distrusted(digest));
}

TEST_F(BackingTest, ACopyThatVerifiesOnTheSecondReadIsTrustedAgainUntouched) {
  Open({.delete_removes_data = true});
  std::string good(1000, 'g');
  const oci::Digest digest = oci::Digest::Of(good);
  ASSERT_TRUE(blobs_->PutSmall(digest, good).ok());
  registry_->PutBlobData(kTarget, digest, good);
  // A transfer that went bad on the way (a proxy's fault), not the stored copy.
  registry_->FailNext(Op::kGetBlob, Integrity("blob does not match its digest"));
  ASSERT_EQ(Read(digest).code(), Code::kIntegrity);
  ASSERT_TRUE(backing_->Distrusted(digest));
  WriteBack(digest);
  EXPECT_FALSE(backing_->Distrusted(digest));
  EXPECT_EQ(registry_->Calls(Op::kDeleteBlob), 0);
  EXPECT_EQ(registry_->Calls(Op::kCompleteUpload), 0);
}

TEST_F(BackingTest, AManifestPutAnsweredDigestInvalidIsRetriedNotDropped) {
  // distribution rewrites a manifest's file in place: a PUT racing another node's PUT of the
  // same manifest can be answered DIGEST_INVALID although the bytes are right.
  Open({});
  const std::string config = "{}";
  const oci::Digest config_digest = oci::Digest::Of(config);
  ASSERT_TRUE(blobs_->PutSmall(config_digest, config).ok());
  const std::string manifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
      config_digest.str() + R"(","size":2},"layers":[]})";
  const oci::Digest digest = oci::Digest::Of(manifest);
  ASSERT_TRUE(blobs_->PutSmall(digest, manifest).ok());
  ASSERT_TRUE(meta_->PutManifestType(digest, "application/vnd.oci.image.manifest.v1+json").ok());
  registry_->FailNext(Op::kPutManifest, Status(Code::kIntegrity, "HTTP 400 DIGEST_INVALID"));
  ASSERT_TRUE(backing_->Start().ok());
  backing_->Put({metadata::ContentKind::kManifest, kTarget, digest, "v1"});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!registry_->ManifestBytes(kTarget, "v1") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(registry_->ManifestBytes(kTarget, "v1"), manifest);
  EXPECT_EQ(registry_->Calls(Op::kPutManifest), 2);
  EXPECT_EQ(metrics_.Get("regcache_backing_failures_total", "reason=\"integrity\""), 1u);
}

}  // namespace
}  // namespace regcache::cache
